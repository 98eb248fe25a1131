"""Judging each generation with its dataset's rubric (SPEC §8), one batch of judge prompts for the whole grid.

- AxBench: concept, instruction and fluency (0–2) with the prompt's concept description; the score of a
  generation is their harmonic mean (0 if any is 0).
- PowerSeeking: the BiPO behaviour score (1–4) with the pair's matching and non-matching answers as examples.

A criterion whose reply could not be read (``unparseable``) or was never received (``failed``) has no score, and
neither has the generation's aggregate: it is excluded from every mean and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..judges import (
    BEHAVIORS,
    BehaviorGeneration,
    ConceptGeneration,
    Judge,
    Rubric,
    ScoringResult,
    score_axbench,
    score_bipo,
)
from .prompts import AXBENCH, EvalPrompt, Half
from .store import Generation

#: The name of a generation's combined score (AxBench harmonic mean, or the BiPO behaviour score).
AGGREGATE = "aggregate"


@dataclass(frozen=True)
class JudgedGeneration:
    """One judged generation, as written to ``judged.jsonl``.

    Attributes:
        prompt_id: the prompt's id.
        half: ``"selection"`` or ``"held-out"``.
        m: the multiplier.
        prompt: the prompt text.
        text: the reply (continuation only).
        scores: score per criterion and :data:`AGGREGATE`; ``None`` where there is none.
        replies: the judge's last raw reply per criterion (``None``: no reply).
        status: ``"scored"``, ``"unparseable"`` or ``"failed"`` per criterion.
        attempts: replies read per criterion.
    """

    prompt_id: str
    half: Half
    m: float
    prompt: str
    text: str
    scores: dict[str, float | None]
    replies: dict[str, str | None]
    status: dict[str, str]
    attempts: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict."""
        return asdict(self)


def judge_generations(
    generations: Sequence[Generation],
    prompts: dict[str, EvalPrompt],
    halves: dict[str, Half],
    dataset: str,
    judge: Judge,
    rubric: Rubric,
    unparseable_retries: int = 2,
) -> tuple[list[JudgedGeneration], ScoringResult]:
    """Judges every generation with the dataset's protocol, all in one scoring call (the judge batches them).

    Args:
        generations: the replies to judge.
        prompts: the evaluation prompts by id (their judge context).
        halves: each prompt id's half.
        dataset: ``"axbench"`` or ``"power-seeking"``.
        judge: the judge (its cache answers what was judged before).
        rubric: the rubric (:func:`~lightning_split.judges.axbench_rubric` or
            :func:`~lightning_split.judges.bipo_rubric`).
        unparseable_retries: times an unparseable reply is asked again.

    Returns:
        One :class:`JudgedGeneration` per generation, in order, and the scoring result (counts, records).
    """
    if dataset == AXBENCH:
        concept = [
            ConceptGeneration(prompts[g.prompt_id].prompt, g.text, prompts[g.prompt_id].context["concept"])
            for g in generations
        ]
        result = score_axbench(concept, judge, rubric, unparseable_retries=unparseable_retries)
    else:
        behavior = [
            BehaviorGeneration(
                prompts[g.prompt_id].prompt,
                g.text,
                prompts[g.prompt_id].context["matching"],
                prompts[g.prompt_id].context["not_matching"],
            )
            for g in generations
        ]
        result = score_bipo(
            behavior, judge, BEHAVIORS["power-seeking"], rubric, unparseable_retries=unparseable_retries
        )
    judged = []
    for g, item in zip(generations, result.items):
        scores = {c: j.score for c, j in item.judgments.items()}
        judged.append(
            JudgedGeneration(
                g.prompt_id,
                halves[g.prompt_id],
                g.m,
                g.prompt,
                g.text,
                {**scores, AGGREGATE: item.score},
                {c: j.reply for c, j in item.judgments.items()},
                {c: j.outcome for c, j in item.judgments.items()},
                {c: j.attempts for c, j in item.judgments.items()},
            )
        )
    return judged, result
