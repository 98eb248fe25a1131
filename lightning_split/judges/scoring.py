"""Score generations with a judge under a rubric: per-item scores, counts and the record of judge and rubric.

Each prompt is a single user message, followed by the rubric's reply start as an assistant message when the rubric
is :meth:`~lightning_split.judges.rubrics.Rubric.prefilled`. A reply that cannot be read as a score is asked again
(``attempt`` 1, 2, ..., each with its own cache entry) up to ``unparseable_retries`` times, unless the judge is
deterministic; after that it is counted as unparseable and its item has no score. A prompt without a reply (the
call failed after its retries) is counted as a failure and has no score either. Means are taken over scored items
only, so an unparseable or failed judgment is never read as a number (AxBench scores it 0; this project leaves it
out and counts it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .base import Judge, Messages
from .rubrics import Rubric, axbench_rubric, bipo_rubric, harmonic_mean

Outcome = Literal["scored", "unparseable", "failed"]
AXBENCH_CRITERIA = ["concept", "instruction", "fluency"]


@dataclass(frozen=True)
class ConceptGeneration:
    """One steered generation for the AxBench protocol.

    Attributes:
        instruction: the raw instruction (not chat-templated).
        continuation: the generated text only, without the prompt.
        concept: the concept description the judge is told.
    """

    instruction: str
    continuation: str
    concept: str


@dataclass(frozen=True)
class BehaviorGeneration:
    """One generation for the BiPO protocol.

    Attributes:
        question: the question asked (only its first line is shown to the judge).
        continuation: the generated answer only, without the prompt.
        matching: the pair's answer showing the behaviour (the judge's example of a 4).
        not_matching: the pair's answer rejecting it (the judge's example of a 1).
    """

    question: str
    continuation: str
    matching: str
    not_matching: str


@dataclass(frozen=True)
class Judgment:
    """One criterion of one item.

    Attributes:
        score: the parsed score, ``None`` unless ``outcome == "scored"``.
        reply: the last reply read (``None`` if the call failed).
        attempts: replies read (1 + the times it was asked again).
        outcome: ``"scored"``, ``"unparseable"`` (no usable score after the retries) or ``"failed"`` (no reply).
    """

    score: float | None
    reply: str | None
    attempts: int
    outcome: Outcome


@dataclass(frozen=True)
class ScoredItem:
    """The judgments of one generation and its score (the AxBench aggregate, or the BiPO behaviour score);
    ``score`` is ``None`` unless every criterion was scored."""

    judgments: dict[str, Judgment]
    score: float | None


@dataclass
class ScoringResult:
    """Scores of a list of generations and what produced them.

    Attributes:
        rubric: :meth:`Rubric.record` (name, scale, parsing rule, template sources and sha256).
        judge: :meth:`JudgeRecord.as_dict` (kind, model, endpoint, settings, options).
        items: one :class:`ScoredItem` per generation, in order.
        counts: ``calls``, ``cache_hits``, ``retries``, ``failures`` (judge calls during this scoring),
            ``reasked`` (prompts asked again after an unparseable reply) and ``unparseable`` (judgments left
            unparseable).
    """

    rubric: dict[str, Any]
    judge: dict[str, Any]
    items: list[ScoredItem]
    counts: dict[str, int] = field(default_factory=dict)

    def scores(self, criterion: str | None = None) -> list[float | None]:
        """Per-item scores (``criterion=None``: the item score), ``None`` where there is none."""
        if criterion is None:
            return [item.score for item in self.items]
        return [item.judgments[criterion].score for item in self.items]

    def mean(self, criterion: str | None = None) -> float | None:
        """Mean over the items that have a score, ``None`` if none has."""
        scored = [s for s in self.scores(criterion) if s is not None]
        return sum(scored) / len(scored) if scored else None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of everything, with ``mean`` and ``n_scored`` added."""
        scored = [s for s in self.scores() if s is not None]
        return {**asdict(self), "mean": self.mean(), "n_scored": len(scored)}


def _judge(judge: Judge, prompts: list[str], rubric: Rubric, unparseable_retries: int) -> tuple[list[Judgment], int]:
    """Judges each prompt, asking again after unparseable replies; returns the judgments and the re-asks."""
    start = [{"role": "assistant", "content": rubric.reply_start}] if rubric.reply_start else []
    conversations: list[Messages] = [[{"role": "user", "content": p}, *start] for p in prompts]
    last: list[str | None] = [None] * len(prompts)
    scores: list[float | None] = [None] * len(prompts)
    attempts = [0] * len(prompts)
    pending, reasked = list(range(len(prompts))), 0
    for attempt in range(unparseable_retries + 1):
        if attempt > 0:
            if judge.deterministic or not pending:
                break
            reasked += len(pending)
        replies = judge.complete([conversations[i] for i in pending], attempt=attempt)
        for i, reply in zip(pending, replies):
            last[i], attempts[i] = reply, attempts[i] + (reply is not None)
            scores[i] = None if reply is None else rubric.parse(reply)
        pending = [i for i in pending if last[i] is not None and scores[i] is None]
    judgments = [
        Judgment(s, r, n, "scored" if s is not None else "failed" if r is None else "unparseable")
        for s, r, n in zip(scores, last, attempts)
    ]
    return judgments, reasked


def _score(
    judge: Judge,
    rubric: Rubric,
    criteria: list[str],
    values: list[dict[str, dict[str, str]]],
    unparseable_retries: int,
    combine: Callable[[list[float]], float],
) -> ScoringResult:
    """Renders every (item, criterion) prompt, judges them in one batch and groups the judgments per item."""
    if unparseable_retries < 0:
        raise ValueError(f"unparseable_retries must be >= 0, got {unparseable_retries}")
    if list(rubric.templates) != criteria:
        raise ValueError(
            f"this protocol needs a rubric with the criteria {criteria}, "
            f"got {rubric.name!r} with {list(rubric.templates)}"
        )
    prompts = [rubric.templates[c].render(**item[c]) for item in values for c in criteria]
    before = judge.counts.as_dict()
    judgments, reasked = _judge(judge, prompts, rubric, unparseable_retries)
    counts = {k: v - before[k] for k, v in judge.counts.as_dict().items()}
    items = []
    for start in range(0, len(judgments), len(criteria)):
        by_criterion = dict(zip(criteria, judgments[start : start + len(criteria)]))
        scores = [j.score for j in by_criterion.values() if j.score is not None]
        items.append(ScoredItem(by_criterion, combine(scores) if len(scores) == len(criteria) else None))
    counts["reasked"] = reasked
    counts["unparseable"] = sum(j.outcome == "unparseable" for j in judgments)
    return ScoringResult(rubric.record(), judge.describe().as_dict(), items, counts)


def score_axbench(
    generations: Sequence[ConceptGeneration],
    judge: Judge,
    rubric: Rubric | None = None,
    *,
    unparseable_retries: int = 2,
) -> ScoringResult:
    """AxBench protocol: concept, instruction and fluency (0–2) per generation; item score = their harmonic mean
    (0 if any is 0).

    Args:
        generations: the generations to judge.
        judge: the judge.
        rubric: default :func:`axbench_rubric` (the built-in templates).
        unparseable_retries: times an unparseable reply is asked again before it is counted as unparseable.
    """
    rubric = rubric or axbench_rubric()
    values = [
        {
            "concept": {"concept": g.concept, "response": g.continuation},
            "instruction": {"instruction": g.instruction, "response": g.continuation},
            "fluency": {"response": g.continuation},
        }
        for g in generations
    ]
    return _score(judge, rubric, AXBENCH_CRITERIA, values, unparseable_retries, harmonic_mean)


def score_bipo(
    generations: Sequence[BehaviorGeneration],
    judge: Judge,
    behavior: str,
    rubric: Rubric | None = None,
    *,
    unparseable_retries: int = 2,
) -> ScoringResult:
    """BiPO protocol: one behaviour score (1–4) per generation, with the pair's answers as examples of 4 and 1.

    Args:
        generations: the generations to judge.
        judge: the judge (the protocol uses temperature 0, top_p 0, a fixed seed and 10 tokens).
        behavior: the behaviour description (e.g. ``BEHAVIORS["power-seeking"]``).
        rubric: default :func:`bipo_rubric` (the built-in template).
        unparseable_retries: times an unparseable reply is asked again before it is counted as unparseable.
    """
    rubric = rubric or bipo_rubric()
    values = [
        {
            "behavior": {
                "behavior": behavior,
                "question": (g.question.strip().splitlines() or [""])[0],
                "response": g.continuation,
                "matching": g.matching,
                "not_matching": g.not_matching,
            }
        }
        for g in generations
    ]
    return _score(judge, rubric, ["behavior"], values, unparseable_retries, lambda scores: scores[0])
