"""Steered generation of every prompt at every multiplier, in as few batched calls as ``rows_per_call`` allows,
skipping what the :class:`~lightning_split.evaluation.store.GenerationStore` already holds.

Each call decodes up to ``rows_per_call`` (prompt, multiplier) rows together, each row with its own multiplier
(:func:`~lightning_split.generation.generate_steered`), and its replies are appended to the store before the next
call starts. Call ``k`` of a run samples under ``seed + k``: an uninterrupted run with the same settings and
``rows_per_call`` repeats itself; a resumed run keeps the stored replies and samples only the missing ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..generation import generate_steered
from .prompts import EvalPrompt
from .store import Generation, GenerationStore


@dataclass(frozen=True)
class GenerationSettings:
    """How replies are generated (SPEC §8: up to 128 new tokens, sampling at temperature 1.0).

    Attributes:
        max_new_tokens: most tokens per reply.
        do_sample: sample (``True``) or decode greedily.
        temperature: the sampling temperature.
        seed: the sampling seed of the first call (call ``k`` uses ``seed + k``).
    """

    max_new_tokens: int = 128
    do_sample: bool = True
    temperature: float = 1.0
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return asdict(self)


def missing_rows(
    prompts: Sequence[EvalPrompt], multipliers: Sequence[float], store: GenerationStore
) -> list[tuple[EvalPrompt, float]]:
    """The (prompt, m) rows the store lacks, prompt by prompt, multipliers in the given order."""
    return [(p, float(m)) for p in prompts for m in multipliers if (p.id, m) not in store]


def generate_missing(
    steered: Any,
    prompts: Sequence[EvalPrompt],
    multipliers: Sequence[float],
    settings: GenerationSettings,
    store: GenerationStore,
    rows_per_call: int,
    report: Callable[[str], None] = print,
) -> int:
    """Generates every (prompt, m) reply the store lacks and appends each call's replies to it.

    Args:
        steered: a :class:`~lightning_split.artifacts.SteeredModel`.
        prompts: the evaluation prompts.
        multipliers: the grid.
        settings: the generation settings (the store's settings must describe them).
        store: where replies are kept.
        rows_per_call: most rows decoded together (memory bound); all missing rows in one call if larger.
        report: receives one progress line per call.

    Returns:
        The number of replies generated (0 when the store held them all).
    """
    from ..data.tokenize import PairTokenizer

    if rows_per_call < 1:
        raise ValueError(f"rows_per_call must be >= 1, got {rows_per_call}")
    rows = missing_rows(prompts, multipliers, store)
    if not rows:
        return 0
    encoder = PairTokenizer(steered.tokenizer)
    ids = {p.id: encoder.prompt_ids(p.prompt) for p, _ in rows}
    calls = -(-len(rows) // rows_per_call)
    for k in range(calls):
        chunk = rows[k * rows_per_call : (k + 1) * rows_per_call]
        start = time.perf_counter()
        texts = generate_steered(
            steered.model,
            steered.tokenizer,
            steered.layout,
            steered.control,
            [ids[p.id] for p, _ in chunk],
            torch.tensor([m for _, m in chunk]),
            steered.positions,
            max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample,
            temperature=settings.temperature,
            seed=settings.seed + k,
        )
        store.append(Generation(p.id, m, p.prompt, text) for (p, m), text in zip(chunk, texts))
        report(f"generated call {k + 1}/{calls}: {len(chunk)} replies in {time.perf_counter() - start:.1f} s")
    return len(rows)
