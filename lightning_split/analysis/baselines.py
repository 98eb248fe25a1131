"""The paper's RQ curve fits beside simpler baselines, each with its parameter count, AIC and BIC.

A fit of the paper's piecewise rational-quadratic decay (:mod:`lightning_split.analysis.fit`, 9 parameters
for preference, 8 for utility) reaching R² 0.97 means little unless simpler curves do worse. This module fits,
on the same points:

- ``line``: ``a + b·m`` (2 parameters);
- ``quadratic``: ``a + b·m + c·m²`` (3 parameters);
- ``logistic``: ``c + a·σ(b·(m − m0))`` with ``σ(t) = 1/(1 + e^{−t})`` (4 parameters; ``a`` and ``c`` are
  solved by least squares for each trial ``(b, m0)``, which are searched from a fixed set of starts);
- ``rq``: the paper's fit (Eq. 15 for preference, Eq. 17 for utility).

Every fit reports R² on the points it was fitted to and the Gaussian-likelihood information criteria
``AIC = n·ln(SSE/n) + 2k`` and ``BIC = n·ln(SSE/n) + k·ln n`` (``k`` the parameter count; lower is better;
comparable only between fits of the same points). :func:`compare_fits` lays them out as the paper's
Tables 2, 6 and 7: R² of the fit on the fitted split, of a fit on the test split, and of the fitted split's
parameters scored on the test split. A fit that cannot be made (too few distinct multipliers, a flat curve)
is a sentence saying why, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares

from .curve import TradeoffCurve
from .fit import MIN_POINTS_PER_PARAMETER, N_PARAMS, FitKind, fit_preference, fit_utility

MODELS: tuple[str, ...] = ("rq", "line", "quadratic", "logistic")
"""The fitted families, in table order."""

PARAMETER_COUNTS: dict[str, dict[FitKind, int]] = {
    "rq": {"preference": N_PARAMS["preference"], "utility": N_PARAMS["utility"]},
    "line": {"preference": 2, "utility": 2},
    "quadratic": {"preference": 3, "utility": 3},
    "logistic": {"preference": 4, "utility": 4},
}
"""Fitted parameters of each family for each curve."""

FORMULAS: dict[str, str] = {
    "rq": "paper Eq. 15 / 17: (α·m + β)·D(m) + b, D piecewise rational-quadratic",
    "line": "a + b·m",
    "quadratic": "a + b·m + c·m²",
    "logistic": "c + a·σ(b·(m − m0))",
}
"""Each family's formula, as the report prints it."""


@dataclass(frozen=True)
class BaselineFit:
    """One fitted curve of any family.

    Attributes:
        model: the family (one of :data:`MODELS`).
        kind: ``"preference"`` or ``"utility"``.
        params: fitted parameters by name.
        n_params: number of fitted parameters ``k``.
        n_points: points fitted ``n``.
        r2: R² on the fitted points.
        sse: sum of squared residuals on the fitted points.
        predict: the fitted curve, ``m ↦ log-odds``.
    """

    model: str
    kind: FitKind
    params: dict[str, float]
    n_params: int
    n_points: int
    r2: float
    sse: float
    predict: Callable[[np.ndarray], np.ndarray]

    @property
    def aic(self) -> float:
        """``n·ln(SSE/n) + 2k`` (``-inf`` for an exact fit)."""
        return self._log_likelihood_term() + 2 * self.n_params

    @property
    def bic(self) -> float:
        """``n·ln(SSE/n) + k·ln n`` (``-inf`` for an exact fit)."""
        return self._log_likelihood_term() + self.n_params * math.log(self.n_points)

    def _log_likelihood_term(self) -> float:
        if self.sse <= 0:
            return -math.inf
        return self.n_points * math.log(self.sse / self.n_points)


def check_fittable(m: ArrayLike, y: ArrayLike, n_params: int) -> str | None:
    """Why points ``(m, y)`` cannot support a fit with ``n_params`` parameters, or ``None`` if they can.

    Refused: non-finite or mismatched points, fewer than :data:`MIN_POINTS_PER_PARAMETER` distinct
    multipliers per parameter, and a flat curve (every value equal: R² is undefined and any flat curve fits).
    """
    m, y = np.asarray(m, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if m.ndim != 1 or m.shape != y.shape:
        return f"m and y must be 1-D of the same length, got shapes {m.shape} and {y.shape}"
    if not (np.isfinite(m).all() and np.isfinite(y).all()):
        return "the curve holds non-finite values"
    needed = math.ceil(MIN_POINTS_PER_PARAMETER * n_params)
    distinct = len(np.unique(m))
    if distinct < needed:
        return (
            f"too few points: {n_params} parameters need {needed} distinct multipliers "
            f"({MIN_POINTS_PER_PARAMETER:g} per parameter), the curve has {distinct}"
        )
    if np.ptp(y) == 0:
        return f"flat curve: every value is {y[0]:.4g}, so R² is undefined and any constant fits"
    return None


def r2_score(y: ArrayLike, prediction: ArrayLike) -> float | str:
    """R² of ``prediction`` against ``y``, or why it is undefined (a flat ``y``)."""
    y, prediction = np.asarray(y, dtype=np.float64), np.asarray(prediction, dtype=np.float64)
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        return f"flat curve: every value is {y[0]:.4g}, so R² is undefined"
    return 1.0 - float(((y - prediction) ** 2).sum()) / total


def fit_model(model: str, kind: FitKind, m: ArrayLike, y: ArrayLike) -> BaselineFit | str:
    """Fits the family ``model`` to the ``kind`` curve ``(m, y)``; returns why not when it cannot be made.

    Raises:
        ValueError: ``model`` or ``kind`` is unknown.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if kind not in ("preference", "utility"):
        raise ValueError(f"kind must be 'preference' or 'utility', got {kind!r}")
    n_params = PARAMETER_COUNTS[model][kind]
    reason = check_fittable(m, y, n_params)
    if reason is not None:
        return reason
    m, y = np.asarray(m, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if model == "rq":
        try:
            curve = (fit_preference if kind == "preference" else fit_utility)(m, y)
        except RuntimeError as error:
            return str(error)
        return _finish(model, kind, curve.params(), curve.predict, m, y)
    params, predict = _FITTERS[model](m, y)
    return _finish(model, kind, params, predict, m, y)


def _finish(
    model: str,
    kind: FitKind,
    params: dict[str, float],
    predict: Callable[[np.ndarray], np.ndarray],
    m: np.ndarray,
    y: np.ndarray,
) -> BaselineFit:
    residual = y - predict(m)
    r2 = r2_score(y, predict(m))
    assert isinstance(r2, float)  # check_fittable refused flat curves
    sse = float(residual @ residual)
    return BaselineFit(model, kind, params, PARAMETER_COUNTS[model][kind], len(m), r2, sse, predict)


def _polynomial(degree: int) -> Callable[[np.ndarray, np.ndarray], tuple[dict[str, float], Callable]]:
    names = ("a", "b", "c")[: degree + 1]

    def fit(m: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], Callable]:
        coef = np.linalg.lstsq(np.vander(m, degree + 1, increasing=True), y, rcond=None)[0]
        return dict(zip(names, map(float, coef))), lambda x: np.polyval(coef[::-1], np.asarray(x, np.float64))

    return fit


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _fit_logistic(m: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], Callable]:
    """``c + a·σ(b·(m − m0))``: ``(a, c)`` by least squares inside a search over ``(b, m0)`` (normalised m)."""
    scale = float(np.abs(m).max())
    mn = m / scale

    def linear(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        design = np.stack([_sigmoid(theta[0] * (mn - theta[1])), np.ones_like(mn)], 1)
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        return design @ coef - y, coef

    best: tuple[float, np.ndarray] | None = None
    for b0 in (-30.0, -8.0, -2.0, 2.0, 8.0, 30.0):
        for m0 in (-0.5, 0.0, 0.5):
            result = least_squares(lambda t: linear(t)[0], [b0, m0], bounds=([-200.0, -3.0], [200.0, 3.0]))
            cost = float(result.fun @ result.fun)
            if best is None or cost < best[0]:
                best = (cost, result.x)
    assert best is not None
    theta = best[1]
    a, c = linear(theta)[1]
    b, m0 = theta[0] / scale, theta[1] * scale
    params = {"a": float(a), "b": float(b), "m0": float(m0), "c": float(c)}
    return params, lambda x: c + a * _sigmoid(b * (np.asarray(x, np.float64) - m0))


_FITTERS = {"line": _polynomial(1), "quadratic": _polynomial(2), "logistic": _fit_logistic}


@dataclass(frozen=True)
class FitComparison:
    """One family on one curve, in the layout of the paper's Tables 2, 6 and 7.

    Attributes:
        model: the family.
        kind: ``"preference"`` or ``"utility"``.
        n_params: fitted parameters.
        fitted: the fit on the fitted split (Table 2), or why it could not be made.
        test_fit: a fit made on the test split (Table 6), or why not; ``None`` without a test curve.
        transfer: R² of ``fitted``'s parameters on the test split (Table 7), or why not; ``None`` without one.
    """

    model: str
    kind: FitKind
    n_params: int
    fitted: BaselineFit | str
    test_fit: BaselineFit | str | None
    transfer: float | str | None


def compare_fits(fitted: TradeoffCurve, test: TradeoffCurve | None = None) -> list[FitComparison]:
    """Every family of :data:`MODELS` on the preference and utility means of ``fitted`` (and ``test``).

    Args:
        fitted: the curve the parameters are fitted on (the paper: train).
        test: a curve of another split of the same control (scored with ``fitted``'s parameters and fitted
            on its own), or ``None``.

    Returns:
        Preference rows first, then utility, each in :data:`MODELS` order.
    """
    rows = []
    for kind in ("preference", "utility"):
        values = getattr(fitted, kind)
        for model in MODELS:
            fit = fit_model(model, kind, fitted.multipliers, values)
            test_fit: BaselineFit | str | None = None
            transfer: float | str | None = None
            if test is not None:
                test_values = getattr(test, kind)
                test_fit = fit_model(model, kind, test.multipliers, test_values)
                reason = check_fittable(test.multipliers, test_values, 1)
                if isinstance(fit, str):
                    transfer = "no fit on the fitted split"
                else:
                    transfer = reason or r2_score(test_values, fit.predict(np.asarray(test.multipliers)))
            rows.append(FitComparison(model, kind, PARAMETER_COUNTS[model][kind], fit, test_fit, transfer))
    return rows


def comparison_markdown(rows: list[FitComparison], fitted_split: str, test_split: str | None) -> list[str]:
    """The comparison as markdown lines: one table per curve, then the reasons for the fits not made."""
    lines: list[str] = []
    notes: list[str] = []
    for kind in ("preference", "utility"):
        header = ["model", "k", f"R² ({fitted_split} fit)", "AIC", "BIC"]
        if test_split is not None:
            header += [f"R² ({test_split} fit)", f"R² ({fitted_split} → {test_split})"]
        lines += ["", f"**{kind.capitalize()} log-odds**", "", "| " + " | ".join(header) + " |"]
        lines.append("|---|" + "---:|" * (len(header) - 1))
        for row in (r for r in rows if r.kind == kind):
            cells = [row.model, str(row.n_params)]
            if isinstance(row.fitted, BaselineFit):
                cells += [f"{row.fitted.r2:.4f}", _criterion(row.fitted.aic), _criterion(row.fitted.bic)]
            else:
                cells += [_note(notes, f"{kind} {row.model} ({fitted_split}): {row.fitted}"), "—", "—"]
            if test_split is not None:
                test_r2 = row.test_fit.r2 if isinstance(row.test_fit, BaselineFit) else row.test_fit
                for label, value in (("fit", test_r2), ("transfer", row.transfer)):
                    if isinstance(value, float):
                        cells.append(f"{value:.4f}")
                    else:
                        cells.append(_note(notes, f"{kind} {row.model} ({test_split} {label}): {value}"))
            lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Fits not made:", "", *(f"{i + 1}. {note}" for i, note in enumerate(notes))]
    lines += ["", "Formulas (k fitted parameters; AIC and BIC from Gaussian residuals, lower is better):", ""]
    lines += [f"- {model}: {FORMULAS[model]}" for model in MODELS]
    return lines


def _note(notes: list[str], text: str) -> str:
    notes.append(text)
    return f"not made ({len(notes)})"


def _criterion(value: float) -> str:
    return "−∞ (exact fit)" if value == -math.inf else f"{value:.1f}"
