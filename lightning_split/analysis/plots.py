"""PNG plots of a trade-off curve, drawn with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lightning_split.analysis.curve import TradeoffCurve
from lightning_split.analysis.fit import CurveFit

_DENSE_POINTS = 400


def plot_preference(
    curve: TradeoffCurve, path: str | Path, fit: CurveFit | None = None, selected: float | None = None
) -> Path:
    """Plots mean preference log-odds against m (with the per-pair interquartile band when held).

    Args:
        curve: The sweep.
        path: Output PNG path.
        fit: Optional fitted curve to overlay.
        selected: Optional multiplier to mark with a vertical line.

    Returns:
        ``path``.
    """
    return _plot_vs_m(curve, curve.preference, curve.pair_preference, fit, selected, "preference log-odds", Path(path))


def plot_utility(
    curve: TradeoffCurve, path: str | Path, fit: CurveFit | None = None, selected: float | None = None
) -> Path:
    """Plots mean utility log-odds against m; arguments as in :func:`plot_preference`."""
    return _plot_vs_m(curve, curve.utility, curve.pair_utility, fit, selected, "utility log-odds", Path(path))


def plot_tradeoff(
    curve: TradeoffCurve,
    path: str | Path,
    preference_fit: CurveFit | None = None,
    utility_fit: CurveFit | None = None,
    selected: float | None = None,
) -> Path:
    """Plots mean preference against mean utility, one point per multiplier annotated with its m.

    Args:
        curve: The sweep.
        path: Output PNG path.
        preference_fit: Optional preference fit; with ``utility_fit`` draws the fitted trade-off path.
        utility_fit: Optional utility fit.
        selected: Optional multiplier to highlight.

    Returns:
        ``path``.
    """
    figure, axes = _figure(curve)
    if preference_fit is not None and utility_fit is not None:
        dense = _dense(curve)
        axes.plot(utility_fit.predict(dense), preference_fit.predict(dense), "-", color="0.6", label="fit")
    axes.plot(curve.utility, curve.preference, "o-", label="measured")
    for m, u, p in zip(curve.multipliers, curve.utility, curve.preference):
        axes.annotate(f"{m:g}", (u, p), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if selected is not None:
        i = curve.multipliers.index(selected)
        axes.plot(
            curve.utility[i],
            curve.preference[i],
            "*",
            color="C3",
            markersize=14,
            label=f"selected m = {selected:g}",
        )
    axes.set_xlabel("mean utility log-odds")
    axes.set_ylabel("mean preference log-odds")
    axes.legend(fontsize=8)
    return _save(figure, Path(path))


def plot_curve(
    curve: TradeoffCurve,
    out_dir: str | Path,
    preference_fit: CurveFit | None = None,
    utility_fit: CurveFit | None = None,
    selected: float | None = None,
) -> dict[str, Path]:
    """Writes ``preference.png``, ``utility.png`` and ``tradeoff.png`` into ``out_dir``.

    Returns:
        Paths keyed ``"preference_png"``, ``"utility_png"``, ``"tradeoff_png"``.
    """
    out_dir = Path(out_dir)
    return {
        "preference_png": plot_preference(curve, out_dir / "preference.png", preference_fit, selected),
        "utility_png": plot_utility(curve, out_dir / "utility.png", utility_fit, selected),
        "tradeoff_png": plot_tradeoff(curve, out_dir / "tradeoff.png", preference_fit, utility_fit, selected),
    }


def _plot_vs_m(
    curve: TradeoffCurve,
    means: list[float],
    per_pair: np.ndarray | None,
    fit: CurveFit | None,
    selected: float | None,
    label: str,
    path: Path,
) -> Path:
    figure, axes = _figure(curve)
    if per_pair is not None:
        low, high = np.percentile(per_pair, [25, 75], axis=1)
        axes.fill_between(curve.multipliers, low, high, alpha=0.2, label="pairs, 25-75%")
    axes.plot(curve.multipliers, means, "o", label="mean")
    if fit is not None:
        dense = _dense(curve)
        axes.plot(dense, fit.predict(dense), "-", label=f"RQ fit, R² = {fit.r2:.3f}")
    if selected is not None:
        axes.axvline(selected, color="C3", linestyle="--", label=f"selected m = {selected:g}")
    axes.set_xlabel("multiplier m")
    axes.set_ylabel(f"mean {label}")
    axes.legend(fontsize=8)
    return _save(figure, path)


def _figure(curve: TradeoffCurve) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    layer = "" if curve.layer is None else f"layer {curve.layer}"
    method = "/".join(part for part in (curve.form, curve.objective) if part)
    parts = (curve.model, layer, method, curve.split, f"{curve.reduction} NLL")
    axes.set_title(" · ".join(part for part in parts if part), fontsize=9)
    axes.grid(alpha=0.3)
    return figure, axes


def _dense(curve: TradeoffCurve) -> np.ndarray:
    return np.union1d(np.linspace(curve.multipliers[0], curve.multipliers[-1], _DENSE_POINTS), [0.0])


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    return path
