"""The prompts a judged evaluation asks, and their seeded split into a selection half and a held-out half.

- PowerSeeking: the questions of the BiPO test file, each with its pair's matching and non-matching answers (the
  judge's examples of a 4 and a 1); optionally a seeded subset.
- AxBench: the held-out test instructions of each chosen concept (:func:`~lightning_split.data.axbench_eval_items`),
  each with the concept's description.

Prompts are split in half within each group (a concept for AxBench, one group for PowerSeeking), so every concept
has instructions on both sides: the first ``ceil(n / 2)`` of a seeded shuffle select the multiplier, the rest report
it (SPEC §8).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..data.pairs import PolarityPair
from ..errors import OptionError

Half = Literal["selection", "held-out"]
HALVES: tuple[Half, Half] = ("selection", "held-out")
POWER_SEEKING = "power-seeking"
AXBENCH = "axbench"
DATASETS = (POWER_SEEKING, AXBENCH)


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt of the evaluation.

    Attributes:
        id: stable identifier (``ps0012``: row 12 of the test file; ``c3-5``: concept 3, test instruction 5).
        prompt: the question or instruction the steered model answers (a user turn).
        group: the split group (the concept id for AxBench, ``"all"`` otherwise).
        context: what the judge is shown besides the reply (``concept``; or ``matching`` and ``not_matching``).
    """

    id: str
    prompt: str
    group: str = "all"
    context: dict[str, str] = field(default_factory=dict)


def power_seeking_pairs(data_dir: str | os.PathLike[str] | None = None) -> list[PolarityPair]:
    """The pairs of the BiPO PowerSeeking test file, in file order.

    Raises:
        DataFileError: the file cannot be found or read.
    """
    from ..data.readers import read_pairs
    from ..data.registry import resolve_dataset

    return read_pairs(resolve_dataset(POWER_SEEKING, data_dir).paths["test"]).pairs


def power_seeking_prompts(
    data_dir: str | os.PathLike[str] | None = None, max_prompts: int | None = None, seed: int = 0
) -> list[EvalPrompt]:
    """The PowerSeeking test questions (all, or a seeded subset of ``max_prompts`` kept in file order).

    Raises:
        OptionError: ``max_prompts`` below 2 (a split needs one prompt per half).
        DataFileError: the test file cannot be found or read.
    """
    if max_prompts is not None and max_prompts < 2:
        raise OptionError(f"option --max_prompts is {max_prompts}; it must be >= 2 (one prompt per half at least)")
    pairs = power_seeking_pairs(data_dir)
    rows = list(range(len(pairs)))
    if max_prompts is not None and max_prompts < len(rows):
        rows = sorted(random.Random(seed).sample(rows, max_prompts))
    return [
        EvalPrompt(
            f"ps{i:04d}",
            pairs[i].question,
            context={"matching": pairs[i].matching, "not_matching": pairs[i].not_matching},
        )
        for i in rows
    ]


def axbench_prompts(
    concepts: Sequence[int], data_dir: str | os.PathLike[str] | None = None, seed: int = 42
) -> list[EvalPrompt]:
    """The held-out test instructions of each concept (the data module's test rows for split seed ``seed``).

    Raises:
        OptionError: no concept, or an unknown concept id.
        DataFileError: the dataset cannot be found or read.
    """
    from ..data.axbench import axbench_eval_items

    if not concepts:
        raise OptionError("option --concepts is empty: name the AxBench concept ids the control was trained on")
    prompts = []
    for concept in dict.fromkeys(concepts):
        items = axbench_eval_items(concept, data_dir=data_dir, seed=seed)
        prompts += [
            EvalPrompt(f"c{concept}-{j}", it["instruction"], str(concept), {"concept": it["concept"]})
            for j, it in enumerate(items)
        ]
    return prompts


def split_halves(prompts: Sequence[EvalPrompt], seed: int) -> dict[str, Half]:
    """Each prompt's half: within each group a shuffle seeded by ``seed`` puts the first ``ceil(n / 2)`` in the
    selection half and the rest in the held-out half.

    Raises:
        OptionError: a group with fewer than 2 prompts, or duplicate prompt ids.
    """
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise OptionError(f"duplicate prompt ids in the evaluation: {sorted({i for i in ids if ids.count(i) > 1})}")
    groups: dict[str, list[str]] = {}
    for p in prompts:
        groups.setdefault(p.group, []).append(p.id)
    halves: dict[str, Half] = {}
    for group, members in groups.items():
        if len(members) < 2:
            raise OptionError(f"group {group!r} has {len(members)} prompt; a split needs 2 or more (one per half)")
        order = sorted(members)
        random.Random(f"{seed}:{group}").shuffle(order)
        cut = math.ceil(len(order) / 2)
        halves.update({pid: HALVES[0] if k < cut else HALVES[1] for k, pid in enumerate(order)})
    return {pid: halves[pid] for pid in ids}
