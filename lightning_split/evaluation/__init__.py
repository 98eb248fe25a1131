"""Judged evaluation of a trained control (SPEC §8): generate at every multiplier, judge, choose the multiplier on a
selection half of the prompts, report it on the held-out half, and compare with the log-odds curve.

Modules: :mod:`.prompts` (the prompts and their split), :mod:`.store` (resumable generations), :mod:`.generate`
(batched steered generation), :mod:`.judging` (the dataset's rubric), :mod:`.selection` (means and the choice),
:mod:`.logodds` and :mod:`.correlation` (the log-odds curve and Spearman's rho), :mod:`.protocol` (all of it) and
:mod:`.report` (the files). The command is ``lightning-split evaluate`` (``docs/evaluation.md``).
"""

from .correlation import Correlation, correlations, spearman
from .generate import GenerationSettings, generate_missing, missing_rows
from .judging import AGGREGATE, JudgedGeneration, judge_generations
from .logodds import LogOdds, from_run, from_sweep
from .prompts import (
    AXBENCH,
    DATASETS,
    HALVES,
    POWER_SEEKING,
    EvalPrompt,
    axbench_prompts,
    power_seeking_prompts,
    split_halves,
)
from .protocol import EvaluationResult, evaluate
from .report import log_wandb, markdown, results_dict, write_outputs
from .selection import NO_VALID, TIE_RULE, Cell, Choice, NoValidJudgmentsError, choose_multiplier, score_table
from .store import EvaluationFolderError, Generation, GenerationStore

__all__ = [
    "AGGREGATE",
    "AXBENCH",
    "DATASETS",
    "HALVES",
    "NO_VALID",
    "POWER_SEEKING",
    "TIE_RULE",
    "Cell",
    "Choice",
    "Correlation",
    "EvalPrompt",
    "EvaluationFolderError",
    "EvaluationResult",
    "Generation",
    "GenerationSettings",
    "GenerationStore",
    "JudgedGeneration",
    "LogOdds",
    "NoValidJudgmentsError",
    "axbench_prompts",
    "choose_multiplier",
    "correlations",
    "evaluate",
    "from_run",
    "from_sweep",
    "generate_missing",
    "judge_generations",
    "log_wandb",
    "markdown",
    "missing_rows",
    "power_seeking_prompts",
    "results_dict",
    "score_table",
    "spearman",
    "split_halves",
    "write_outputs",
]
