"""Polarity-pair metrics: preference/utility log-odds, pair accuracy, the clamped-pair count (SPEC §2), and
accuracy and preference split by answer class with their balanced means.

The metric classes are ``torchmetrics.Metric`` subclasses with float64 ``"sum"`` states (exact under
DDP); the functions are the stateless formulas they use, for the sweep engine and the reports.
"""

from lightning_split.metrics.functional import (
    DEFAULT_EPS,
    DEFAULT_REDUCTION,
    REDUCTIONS,
    Reduction,
    anti_steerable_fraction,
    balanced_mean,
    class_means,
    pair_accuracy,
    pair_nll,
    preference_log_odds,
    utility_log_odds,
)
from lightning_split.metrics.pair_metrics import (
    AnswerClassSplit,
    ClampedPairCount,
    PairAccuracy,
    PairMetric,
    PerPairValues,
    PreferenceLogOdds,
    UtilityLogOdds,
)

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_REDUCTION",
    "REDUCTIONS",
    "AnswerClassSplit",
    "ClampedPairCount",
    "PairAccuracy",
    "PairMetric",
    "PerPairValues",
    "PreferenceLogOdds",
    "Reduction",
    "UtilityLogOdds",
    "anti_steerable_fraction",
    "balanced_mean",
    "class_means",
    "pair_accuracy",
    "pair_nll",
    "preference_log_odds",
    "utility_log_odds",
]
