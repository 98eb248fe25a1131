"""The preference–utility frontier of several methods on one PNG (matplotlib's Agg canvas, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lightning_split.analysis.compare import COST, GAIN, Comparison


def plot_frontier(comparison: Comparison, path: str | Path) -> Path:
    """Plots each method's preference gain against its utility cost over m >= 0, one line per method.

    Points are labelled with their m (means over a method's seeds); a star marks each method's equal-cost
    point ``m*`` and a dashed line the budget.

    Args:
        comparison: The methods (:func:`~lightning_split.analysis.compare.compare`).
        path: Output PNG path.

    Returns:
        ``path``.
    """
    figure = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for k, method in enumerate(comparison.methods):
        color = f"C{k % 10}"
        ms, cost, gain = zip(*method.frontier)
        seeds = f" ({len(method.runs)} seeds)" if len(method.runs) > 1 else ""
        axes.plot(cost, gain, "o-", color=color, markersize=3, label=f"{method.label}{seeds}")
        for m, x, y in method.frontier:
            axes.annotate(f"{m:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=color)
        star = method.at_equal_cost
        axes.plot(star[COST].mean, star[GAIN].mean, "*", color=color, markersize=12, markeredgecolor="black")
    axes.axvline(comparison.budget, color="0.5", linestyle="--", label=f"budget {comparison.budget:g} (★ m*)")
    axes.axhline(0.0, color="0.8", linewidth=0.8)
    axes.set_xlabel("utility cost: utility(0) − utility(m), log-odds")
    axes.set_ylabel("preference gain: pref(m) − pref(0), log-odds")
    axes.set_title(f"preference–utility frontier, m ≥ 0 · {comparison.title}", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)
