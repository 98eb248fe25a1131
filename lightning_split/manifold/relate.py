"""How the measured distances relate to the utility drop over a sweep.

For each layer and measure, over the grid (one point per multiplier, means over the activations):

- the Spearman rank correlation between the mean distance and the utility drop ``U(0) − U(m)``;
- the R² of a quadratic fit of the mean utility log-odds against the mean distance, beside the R² of the
  same quadratic against ``m`` (:func:`lightning_split.analysis.baselines.fit_model`): if the validity-decay
  story holds, distance predicts utility at least as well as ``m`` does.

A value that cannot be computed (a constant distance, too few multipliers) is a sentence, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from ..analysis.baselines import BaselineFit, fit_model
from ..analysis.curve import TradeoffCurve
from .measure import LayerMeasures

MEASURE_MEANINGS: dict[str, str] = {
    "residual": "share of the centred activation's norm outside the top principal subspace of the unsteered "
    "activations explaining that share of their variance: ‖(I − BBᵀ)(h − μ)‖ / ‖h − μ‖",
    "knn": "mean distance to the k nearest unsteered (reference) activations, divided by the median leave-one-out "
    "k-NN distance among the reference activations themselves (1: as close as a typical unsteered one)",
    "mahalanobis": "Mahalanobis distance under the Ledoit–Wolf shrunk Gaussian of the unsteered activations",
    "projection": "mean projection ⟨h(m) − μ, u⟩ on the principal direction u of Δh = h(m) − h(0) (for a vector "
    "control at its own layer, its direction)",
}
"""What each measure is (the report lists it; ``residual@<level>`` share the ``residual`` meaning)."""


@dataclass(frozen=True)
class MeasureRelation:
    """One measure of one layer against the utility curve.

    Attributes:
        layer: the block.
        measure: the measure's name.
        means: ``[M]`` mean value per multiplier.
        spearman: rank correlation with the utility drop, or why it is undefined.
        r2_distance: R² of utility ~ quadratic(mean measure), or why not fitted.
        r2_multiplier: R² of utility ~ quadratic(m), or why not fitted.
    """

    layer: int
    measure: str
    means: np.ndarray
    spearman: float | str
    r2_distance: float | str
    r2_multiplier: float | str


def spearman(x: np.ndarray, y: np.ndarray) -> float | str:
    """Spearman's rank correlation of ``x`` and ``y``, or why it is undefined (a constant series, < 3 points)."""
    if len(x) < 3:
        return f"{len(x)} points: too few for a rank correlation"
    for name, values in (("the measure", x), ("the utility drop", y)):
        if np.ptp(values) == 0:
            return f"{name} is constant over the grid: no rank correlation"
    return float(spearmanr(x, y).statistic)


def _r2(fit: BaselineFit | str) -> float | str:
    return fit.r2 if isinstance(fit, BaselineFit) else fit


def relate(measures: LayerMeasures, curve: TradeoffCurve) -> list[MeasureRelation]:
    """Relates every measure of ``measures`` to ``curve``'s utility (same grid).

    Raises:
        ValueError: the grids differ.
    """
    if list(measures.multipliers) != list(curve.multipliers):
        raise ValueError(f"the measures' grid {measures.multipliers} differs from the curve's {curve.multipliers}")
    utility = np.asarray(curve.utility, dtype=np.float64)
    drop = utility[curve.zero_index] - utility
    by_m = _r2(fit_model("quadratic", "utility", curve.multipliers, utility))
    out = []
    for name, means in measures.means().items():
        by_distance = _r2(fit_model("quadratic", "utility", means, utility))
        out.append(MeasureRelation(measures.layer, name, means, spearman(means, drop), by_distance, by_m))
    return out
