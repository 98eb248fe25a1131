"""Fits of the paper's piecewise rational-quadratic validity decay to log-odds curves (Eqs. 12, 15, 17).

    D(m) = [1 + (m - m+)^2 / L+]^(-p+) for m >= 0,   [1 + (m - m-)^2 / L-]^(-p-) for m < 0
    PrefOdds(m) ~ (alpha*m + beta) * D_p(m) + b_p
    UtilOdds(m) ~ beta_u * D_u(m) + b_u

The six decay parameters are fitted by SLSQP under the equality constraint D+(0) = D-(0) (continuity of
the two branches at m = 0), written in log form, ``p+ log(1 + m+^2/L+) = p- log(1 + m-^2/L-)``. For each
trial of the decay parameters the linear coefficients (alpha, beta, b) are solved exactly by least squares
(variable projection), so SLSQP searches only the six nonlinear ones. L and p are optimised on a log
scale inside bounds, which keeps them positive. The fit runs on normalised data (m divided by max |m|,
y standardised) from a fixed set of starting points, and the parameters are mapped back to data units.

Individual parameters are not identifiable (different decay shapes give near-identical curves); the fitted
curve and its R² are the meaningful outputs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize

FitKind = Literal["preference", "utility"]

N_PARAMS: dict[str, int] = {"preference": 9, "utility": 8}
"""Number of fitted parameters of each curve."""

MIN_POINTS_PER_PARAMETER = 2.0
"""Distinct multipliers a fit needs per fitted parameter (18 for preference, 16 for utility). With fewer, a
9-parameter curve passes through nearly any 10 points: R² near 1 and absurd parameters, evidence of nothing."""

_M_BOUND = 5.0  # |m±| <= 5 * max|m| of the data
_LOG_L_BOUNDS = (np.log(1e-4), np.log(1e4))  # L± in normalised units (max|m| = 1)
_LOG_P_BOUNDS = (np.log(1e-2), np.log(1e2))
_FEASIBLE = 1e-9  # largest accepted |log D+(0) - log D-(0)|


@dataclass(frozen=True)
class RQDecay:
    """The piecewise rational-quadratic validity decay D(m) of Eq. 12.

    Attributes:
        m_pos: Centre m+ of the m >= 0 branch.
        l_pos: Scale L+ > 0 of the m >= 0 branch.
        p_pos: Tail exponent p+ > 0 of the m >= 0 branch.
        m_neg: Centre m- of the m < 0 branch.
        l_neg: Scale L- > 0 of the m < 0 branch.
        p_neg: Tail exponent p- > 0 of the m < 0 branch.
    """

    m_pos: float
    l_pos: float
    p_pos: float
    m_neg: float
    l_neg: float
    p_neg: float

    def __call__(self, m: ArrayLike) -> np.ndarray:
        """Evaluates D at the multipliers ``m``."""
        m = np.asarray(m, dtype=np.float64)
        pos = np.exp(-self.p_pos * np.log1p((m - self.m_pos) ** 2 / self.l_pos))
        neg = np.exp(-self.p_neg * np.log1p((m - self.m_neg) ** 2 / self.l_neg))
        return np.where(m >= 0, pos, neg)

    @property
    def continuity_gap(self) -> float:
        """``|D+(0) - D-(0)|``, the mismatch of the two branches at m = 0."""
        pos = (1 + self.m_pos**2 / self.l_pos) ** -self.p_pos
        neg = (1 + self.m_neg**2 / self.l_neg) ** -self.p_neg
        return abs(pos - neg)


@dataclass(frozen=True)
class CurveFit:
    """A fitted preference (Eq. 15) or utility (Eq. 17) curve, ``(alpha*m + beta) * D(m) + offset``.

    Attributes:
        kind: ``"preference"`` or ``"utility"`` (for utility ``alpha`` is 0 by construction).
        decay: The fitted validity decay.
        alpha: Slope alpha_p of the preference model.
        beta: beta_p (preference) or beta_u (utility).
        offset: b_p or b_u.
        r2: Coefficient of determination on the points that were fitted.
        n_points: Number of points fitted.
    """

    kind: FitKind
    decay: RQDecay
    alpha: float
    beta: float
    offset: float
    r2: float
    n_points: int

    def predict(self, m: ArrayLike) -> np.ndarray:
        """The fitted log-odds at the multipliers ``m``."""
        m = np.asarray(m, dtype=np.float64)
        return (self.alpha * m + self.beta) * self.decay(m) + self.offset

    def params(self) -> dict[str, float]:
        """All fitted parameters by name (``alpha`` only for preference)."""
        linear = {"alpha": self.alpha} if self.kind == "preference" else {}
        return {**linear, "beta": self.beta, "offset": self.offset, **asdict(self.decay)}


def fit_preference(m: ArrayLike, y: ArrayLike, min_points_per_parameter: float = MIN_POINTS_PER_PARAMETER) -> CurveFit:
    """Fits ``(alpha*m + beta) * D(m) + b`` to preference log-odds ``y`` at multipliers ``m``.

    Args:
        m: the multipliers.
        y: the preference log-odds at ``m``.
        min_points_per_parameter: distinct multipliers required per fitted parameter (at least 1).

    Raises:
        ValueError: If inputs are not finite 1-D arrays of equal length, or there are fewer distinct
            multipliers than ``min_points_per_parameter`` × the 9 parameters.
        RuntimeError: If no start converges to a fit continuous at m = 0.
    """
    return _fit("preference", m, y, min_points_per_parameter)


def fit_utility(m: ArrayLike, y: ArrayLike, min_points_per_parameter: float = MIN_POINTS_PER_PARAMETER) -> CurveFit:
    """Fits ``beta * D(m) + b`` to utility log-odds ``y`` at multipliers ``m``.

    Args, Raises: as in :func:`fit_preference`, with 8 parameters.
    """
    return _fit("utility", m, y, min_points_per_parameter)


def r2_on(fit: CurveFit, m: ArrayLike, y: ArrayLike) -> float:
    """R² of a fit made on one split, scored on points ``(m, y)`` of another (the paper's Table 7).

    Negative when the fit predicts worse than the mean of ``y``; ``nan`` when ``y`` is constant.
    """
    m, y = _as_points(m, y)
    return _r2(y, fit.predict(m))


def _fit(kind: FitKind, m: ArrayLike, y: ArrayLike, min_points_per_parameter: float) -> CurveFit:
    m, y = _as_points(m, y)
    if min_points_per_parameter < 1:
        raise ValueError(f"min_points_per_parameter must be >= 1, got {min_points_per_parameter}")
    distinct = len(np.unique(m))
    needed = math.ceil(min_points_per_parameter * N_PARAMS[kind])
    if distinct < needed:
        raise ValueError(
            f"a {kind} fit has {N_PARAMS[kind]} parameters and needs at least {needed} distinct multipliers "
            f"({min_points_per_parameter:g} per parameter), got {distinct}: with fewer the curve follows almost "
            "any points, so its R² and parameters would mean nothing"
        )
    m_scale = float(np.abs(m).max())
    y_mean, y_std = float(y.mean()), float(y.std())
    y_std = y_std if y_std > 0 else 1.0
    mn, yn = m / m_scale, (y - y_mean) / y_std

    def design(theta: np.ndarray) -> np.ndarray:
        d = _unpack(theta)(mn)
        return np.stack([mn * d, d, np.ones_like(d)] if kind == "preference" else [d, np.ones_like(d)], 1)

    def sse(theta: np.ndarray) -> float:
        x = design(theta)
        coef = np.linalg.lstsq(x, yn, rcond=None)[0]
        residual = x @ coef - yn
        return float(residual @ residual)

    bounds = [(-_M_BOUND, _M_BOUND), _LOG_L_BOUNDS, _LOG_P_BOUNDS] * 2
    constraint = {"type": "eq", "fun": _log_gap, "jac": _log_gap_jac}
    best: tuple[float, np.ndarray] | None = None
    for start in _starts():
        result = minimize(
            sse,
            start,
            method="SLSQP",
            bounds=bounds,
            constraints=[constraint],
            options={"maxiter": 300, "ftol": 1e-12},
        )
        if abs(_log_gap(result.x)) <= _FEASIBLE and (best is None or result.fun < best[0]):
            best = (float(result.fun), result.x)
    if best is None:
        raise RuntimeError(f"SLSQP found no {kind} fit continuous at m = 0")
    theta = best[1]
    coef = np.linalg.lstsq(design(theta), yn, rcond=None)[0] * y_std
    alpha, beta, offset = (coef[0] / m_scale, coef[1], coef[2]) if kind == "preference" else (0.0, *coef)
    norm = _unpack(theta)
    decay = RQDecay(
        m_pos=norm.m_pos * m_scale,
        l_pos=norm.l_pos * m_scale**2,
        p_pos=norm.p_pos,
        m_neg=norm.m_neg * m_scale,
        l_neg=norm.l_neg * m_scale**2,
        p_neg=norm.p_neg,
    )
    fit = CurveFit(kind, decay, float(alpha), float(beta), float(offset + y_mean), 0.0, len(m))
    return replace(fit, r2=_r2(y, fit.predict(m)))


def _as_points(m: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(m, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if m.ndim != 1 or m.shape != y.shape:
        raise ValueError(f"m and y must be 1-D of the same length, got shapes {m.shape} and {y.shape}")
    if not (np.isfinite(m).all() and np.isfinite(y).all()):
        raise ValueError("m and y must be finite")
    return m, y


def _unpack(theta: np.ndarray) -> RQDecay:
    m_pos, log_l_pos, log_p_pos, m_neg, log_l_neg, log_p_neg = theta
    return RQDecay(
        float(m_pos),
        float(np.exp(log_l_pos)),
        float(np.exp(log_p_pos)),
        float(m_neg),
        float(np.exp(log_l_neg)),
        float(np.exp(log_p_neg)),
    )


def _log_gap(theta: np.ndarray) -> float:
    """``log D-(0) - log D+(0)``; zero exactly when the branches meet at m = 0."""
    d = _unpack(theta)
    return d.p_pos * np.log1p(d.m_pos**2 / d.l_pos) - d.p_neg * np.log1p(d.m_neg**2 / d.l_neg)


def _log_gap_jac(theta: np.ndarray) -> np.ndarray:
    """Gradient of :func:`_log_gap` with respect to ``theta``."""
    d = _unpack(theta)
    grads = []
    for m, scale, power in ((d.m_pos, d.l_pos, d.p_pos), (d.m_neg, d.l_neg, d.p_neg)):
        ratio = m**2 / scale
        grads.append([power * 2 * m / scale / (1 + ratio), -power * ratio / (1 + ratio), power * np.log1p(ratio)])
    return np.array(grads[0] + [-g for g in grads[1]])


def _starts() -> list[np.ndarray]:
    """Deterministic starting points (normalised units), each continuous at m = 0."""
    starts = []
    for log_l, log_p, m_pos in itertools.product(np.log([0.05, 0.5, 5.0]), np.log([0.5, 2.0]), [0.0, 0.3]):
        starts.append(np.array([m_pos, log_l, log_p, -m_pos, log_l, log_p]))
    for log_l_pos, log_l_neg in itertools.permutations(np.log([0.05, 0.5, 5.0]), 2):
        starts.append(np.array([0.0, log_l_pos, 0.0, 0.0, log_l_neg, 0.0]))
    return starts


def _r2(y: np.ndarray, prediction: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        return float("nan")
    return 1.0 - float(((y - prediction) ** 2).sum()) / total
