"""Answer classes of polarity pairs and seeded subsets balanced by them.

A dataset's answers form classes when its matching completions take a few values and those are the same
values as its not-matching completions (Psychopathy's "Yes"/"No", a multiple-choice "A"/"B"/"C"). Each pair
then has the class of its matching completion, and every number that averages over pairs can be split by
it: a control that learned to answer "Yes" to everything scores accuracy 1.0 on the "Yes" pairs and 0.0 on
the "No" pairs, which a pooled accuracy of 0.5 hides. Free-text datasets have no classes (class id
:data:`NO_CLASS`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from lightning_split.data.pairs import PolarityPair

MAX_ANSWER_CLASSES = 8
"""The most distinct answers a dataset may have for its answers to count as classes."""

NO_CLASS = -1
"""Class id of a pair whose dataset's answers do not form classes."""


def answer_classes(pairs: Sequence[PolarityPair]) -> list[str]:
    """The answer classes of a dataset, sorted, or ``[]`` when its answers are free text.

    Answers form classes when the matching completions take between 2 and :data:`MAX_ANSWER_CLASSES` values
    and the not-matching completions take the same values.
    """
    matching = {p.matching for p in pairs}
    if 2 <= len(matching) <= MAX_ANSWER_CLASSES and matching == {p.not_matching for p in pairs}:
        return sorted(matching)
    return []


def class_id(pair: PolarityPair, classes: Sequence[str]) -> int:
    """The class of ``pair`` (the position of its matching completion in ``classes``), or :data:`NO_CLASS`."""
    return classes.index(pair.matching) if classes else NO_CLASS


def class_label(classes: Sequence[str], class_index: int) -> str:
    """A name for class ``class_index`` fit for a logged key (``"Yes"``; ``"class3"`` when unnamed)."""
    name = classes[class_index] if class_index < len(classes) else f"class{class_index}"
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or f"class{class_index}"


def trainer_answer_classes(trainer: Any) -> list[str]:
    """The answer classes of the trainer's data module (``[]`` when it has none or is not a polarity one)."""
    return list(getattr(getattr(trainer, "datamodule", None), "answer_classes", None) or [])


def balanced_subset(index: Sequence[int], classes: Sequence[int], size: int, seed: int) -> list[int]:
    """A seeded subset of at most ``size`` pair indices with as equal a share of each class as possible.

    Each class gives ``size / n_classes`` pairs (shares differ by at most one); a class with fewer pairs gives
    all of them and the rest is shared by the others. Within a class the pairs are a ``random.Random(seed)``
    sample. Pairs without a class (:data:`NO_CLASS`) form one class of their own, so a free-text split gets a
    seeded random sample. The result depends only on the ``(index, class)`` pairs given, not on their order.

    Args:
        index: the pairs' indices inside their split (duplicates are counted once).
        classes: each pair's class id.
        size: the most pairs to keep (>= 1).
        seed: the seed of the draw.

    Returns:
        The chosen indices, sorted.
    """
    if size < 1:
        raise ValueError(f"a subset needs size >= 1, got {size}")
    if len(index) != len(classes):
        raise ValueError(f"{len(index)} indices for {len(classes)} classes")
    pools: dict[int, list[int]] = {}
    for i, c in sorted(set(zip((int(i) for i in index), (int(c) for c in classes)))):
        pools.setdefault(c, []).append(i)
    rng = random.Random(seed)
    for c in sorted(pools):
        rng.shuffle(pools[c])
    quota = dict.fromkeys(pools, 0)
    left = min(size, sum(len(pool) for pool in pools.values()))
    while left > 0:
        open_classes = [c for c in sorted(pools) if quota[c] < len(pools[c])]
        share = max(left // len(open_classes), 1)
        for c in open_classes:
            take = min(share, len(pools[c]) - quota[c], left)
            quota[c] += take
            left -= take
    return sorted(i for c, pool in pools.items() for i in pool[: quota[c]])


__all__ = [
    "MAX_ANSWER_CLASSES",
    "NO_CLASS",
    "answer_classes",
    "balanced_subset",
    "class_id",
    "class_label",
    "trainer_answer_classes",
]
