"""PNG pictures of the manifold measures (matplotlib's Agg canvas, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..analysis.curve import TradeoffCurve
from .capture import POLARITIES
from .measure import LayerMeasures

TRAJECTORY_PAIRS = 12
"""Pairs whose trajectories the preference plane draws (the first ones of the split; all reference points)."""


def plot_preference_plane(measures: LayerMeasures, path: str | Path, pairs: int = TRAJECTORY_PAIRS) -> Path:
    """The unsteered reference activations of both polarities on the first two principal directions, and the
    steered trajectories of the first ``pairs`` pairs' two readouts as m grows (m = 0 circled, off-manifold
    points crossed)."""
    ref = measures.reference
    figure = Figure(figsize=(6.5, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    points = ref.plane(ref.reference).numpy()
    labels = ref.labels.numpy()
    for label, name in enumerate(POLARITIES):
        chosen = points[labels == label]
        axes.scatter(chosen[:, 0], chosen[:, 1], s=6, alpha=0.3, color=f"C{label}", label=f"unsteered {name} (train)")
    shown = np.isin(measures.pair_index, np.unique(measures.pair_index)[: max(pairs, 1)])
    off = measures.off_manifold
    zero = measures.multipliers.index(0.0)
    for column in np.flatnonzero(shown):
        track = measures.plane[:, column]
        color = f"C{measures.polarity[column]}"
        axes.plot(track[:, 0], track[:, 1], "-", color=color, linewidth=0.7, alpha=0.8)
        axes.plot(track[zero, 0], track[zero, 1], "o", color=color, markersize=4, markerfacecolor="none")
        axes.plot(track[off[:, column], 0], track[off[:, column], 1], "x", color="C3", markersize=4)
    axes.plot([], [], "x", color="C3", label=f"off-manifold (k-NN ratio > {ref.off_threshold:.2f})")
    axes.plot([], [], "o", color="0.3", markerfacecolor="none", label="m = 0")
    share = ref.eigenvalues[:2] / ref.eigenvalues.sum()
    axes.set_xlabel(f"principal direction 1 ({float(share[0]):.0%} of variance)")
    axes.set_ylabel(f"principal direction 2 ({float(share[1]):.0%} of variance)")
    span = f"m from {measures.multipliers[0]:g} to {measures.multipliers[-1]:g}"
    axes.set_title(
        f"preference plane, layer {ref.layer}: trajectories of {int(shown.sum()) // 2} pairs, {span}", fontsize=9
    )
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return _save(figure, Path(path))


def plot_distance_vs_m(measures: LayerMeasures, curve: TradeoffCurve, path: str | Path) -> Path:
    """Mean distances against m (k-NN ratio, subspace residuals, Mahalanobis) beside the utility curve."""
    figure = Figure(figsize=(13, 3.4), dpi=120)
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 4)
    m = measures.multipliers
    means = measures.means()
    panels[0].plot(m, means["knn"], "o-")
    panels[0].axhline(measures.reference.off_threshold, color="C3", linestyle="--", label="off-manifold threshold")
    panels[0].set_ylabel("k-NN distance / unsteered NN distance")
    panels[0].legend(fontsize=7)
    for name in (n for n in means if n.startswith("residual@")):
        dims = measures.reference.levels[float(name.split("@")[1])]
        panels[1].plot(m, means[name], "o-", label=f"{name} ({dims} dims)")
    panels[1].set_ylabel("residual outside the principal subspace")
    panels[1].legend(fontsize=7)
    panels[2].plot(m, means["mahalanobis"], "o-")
    panels[2].set_ylabel("Mahalanobis distance (shrunk)")
    panels[3].plot(curve.multipliers, curve.utility, "o-", color="C2")
    panels[3].set_ylabel("mean utility log-odds")
    for axes in panels:
        axes.set_xlabel("multiplier m")
        axes.grid(alpha=0.3)
    figure.suptitle(f"layer {measures.layer}: distance from the unsteered activations vs m, and utility", fontsize=9)
    return _save(figure, Path(path))


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    return path
