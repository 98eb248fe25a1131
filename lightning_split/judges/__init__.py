"""LLM judges for steered generations (SPEC §8): backends, rubrics and the two judging protocols.

Typical use::

    from lightning_split.judges import OpenAIJudge, ConceptGeneration, score_axbench

    judge = OpenAIJudge("gpt-4.1-mini", temperature=0.0, seed=0, cache="~/.cache/lightning_split/judge.sqlite")
    result = score_axbench([ConceptGeneration(instruction, continuation, concept)], judge)
    result.mean(), result.counts, result.judge, result.rubric

Backends: :class:`OpenAIJudge` (any OpenAI-compatible server) and :class:`HFJudge` (a model loaded in process).
Protocols: :func:`score_axbench` (0–2 concept, instruction, fluency; harmonic-mean aggregate) and
:func:`score_bipo` (1–4 behaviour score). See ``docs/judges.md``.
"""

from .base import Judge, JudgeConfigError, JudgeCounts, JudgeRecord, Messages
from .cache import JudgeCache
from .hf_judge import HFJudge
from .openai_judge import OpenAIJudge
from .rubrics import (
    BEHAVIORS,
    Rubric,
    RubricTemplate,
    RubricTemplateError,
    axbench_rubric,
    bipo_rubric,
    harmonic_mean,
    load_template,
    parse_leading_score,
    parse_prefilled,
    parse_rating,
)
from .scoring import (
    BehaviorGeneration,
    ConceptGeneration,
    Judgment,
    ScoredItem,
    ScoringResult,
    score_axbench,
    score_bipo,
)

__all__ = [
    "BEHAVIORS",
    "BehaviorGeneration",
    "ConceptGeneration",
    "HFJudge",
    "Judge",
    "JudgeCache",
    "JudgeConfigError",
    "JudgeCounts",
    "JudgeRecord",
    "Judgment",
    "Messages",
    "OpenAIJudge",
    "Rubric",
    "RubricTemplate",
    "RubricTemplateError",
    "ScoredItem",
    "ScoringResult",
    "axbench_rubric",
    "bipo_rubric",
    "harmonic_mean",
    "load_template",
    "parse_leading_score",
    "parse_prefilled",
    "parse_rating",
    "score_axbench",
    "score_bipo",
]
