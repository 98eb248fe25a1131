"""The manifold analysis as markdown: setup, references, distances per m, their relation to utility, the share
of ``Δh`` in utility-relevant directions, the curve fits with baselines, figures and a plain reading."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.baselines import BaselineFit, FitComparison, comparison_markdown
from ..analysis.curve import TradeoffCurve
from .measure import ManifoldSweep
from .relate import MEASURE_MEANINGS, MeasureRelation
from .tables import layer_table, relation_table

READOUT = (
    "Each pair gives two activations per layer, as DiffMean defines them: the residual stream after the block "
    "averaged over the tokens of A_p, and over the tokens of A_n (packed row [prompt | A_p | A_n])."
)


@dataclass
class ManifoldReport:
    """Everything the report shows.

    Attributes:
        setup: field → value rows of the setup table.
        sweep: the measuring passes.
        curve: the evaluated split's curve recomputed by the measuring pass.
        saved_curve: the run's saved curve of that split (``None``: not compared).
        relations: layer → its measures related to the utility.
        fits: the baseline comparison (:func:`~lightning_split.analysis.baselines.compare_fits`).
        fitted_split: name of the split the curve parameters were fitted on.
        test_split: name of the split they were scored on (``None``: none).
        figures: figure title → PNG path (relative links are written).
    """

    setup: list[tuple[str, Any]]
    sweep: ManifoldSweep
    curve: TradeoffCurve
    saved_curve: TradeoffCurve | None
    relations: dict[int, list[MeasureRelation]]
    fits: list[FitComparison]
    fitted_split: str
    test_split: str | None
    figures: dict[str, Path]


def cell(value: object) -> str:
    """A table cell: 4 significant digits, ``—`` for missing or NaN values, sentences as they are."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def write_markdown(report: ManifoldReport, path: str | Path) -> Path:
    """Writes the report to ``path`` (figures linked relative to its folder)."""
    path = Path(path)
    lines = ["# Manifold analysis", "", "## Setup", "", "| field | value |", "|---|---|"]
    lines += [f"| {name} | {cell(value)} |" for name, value in report.setup]
    lines += ["", READOUT, *_consistency(report), *_references(report), *_per_layer(report), *_relations(report)]
    lines += [*_utility_share(report), "", "## Curve fits: the paper's RQ decay beside baselines", ""]
    lines.append(
        "Tables 2, 6 and 7 of the paper in one: R² of the fit on the fitted split, of a fit on the test split, and of "
        "the fitted split's parameters scored on the test split (negative: worse than the test mean)."
    )
    lines += comparison_markdown(report.fits, report.fitted_split, report.test_split)
    lines += ["", "## Figures", ""]
    lines += [f"![{title}]({figure.relative_to(path.parent)})" for title, figure in report.figures.items()]
    lines += ["", "## Reading", "", *reading(report)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _consistency(report: ManifoldReport) -> list[str]:
    if report.saved_curve is None:
        return []
    saved = dict(zip(report.saved_curve.multipliers, report.saved_curve.utility, strict=True))
    shared = [(u, saved[m]) for m, u in zip(report.curve.multipliers, report.curve.utility, strict=True) if m in saved]
    if not shared:
        return ["", "The measured grid shares no multiplier with the saved curve: the two were not compared."]
    gap = max(abs(measured - kept) for measured, kept in shared)
    return [
        "",
        f"The measuring pass recomputed the {report.curve.split or 'evaluated'} curve on the same pairs at "
        f"{len(shared)} multipliers the saved curve also has: its mean utility log-odds differ from the saved "
        f"curve's by at most {gap:.2e} (float32 passes over batches of other sizes).",
    ]


def _references(report: ManifoldReport) -> list[str]:
    refs = report.sweep.references
    levels = sorted(next(iter(refs.values())).levels)
    header = ["layer", "activations", *(f"dims @ {level:g}" for level in levels), "LW shrinkage", "NN scale"]
    header.append("off-manifold threshold")
    lines = ["", "## Unsteered references", "", "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for layer, ref in refs.items():
        cells = [str(layer), str(ref.n_seen), *(str(ref.levels[level]) for level in levels), cell(ref.shrinkage)]
        cells += [cell(ref.nn_scale), cell(ref.off_threshold)]
        lines.append("| " + " | ".join(cells) + " |")
    d = next(iter(refs.values())).mean.numel()
    lines += [
        "",
        f"Width d = {d}. dims @ level: principal directions explaining that share of the variance. LW shrinkage: "
        "Ledoit–Wolf intensity s of the Gaussian (covariance (1 − s)Σ + s·tr(Σ)/d·I). NN scale: median leave-one-out "
        "k-NN distance among the reference activations. Off-manifold threshold: the 95th percentile of the "
        "reference's own leave-one-out k-NN ratios.",
        "",
        *(f"- {name}: {meaning}." for name, meaning in MEASURE_MEANINGS.items()),
    ]
    return lines


def _per_layer(report: ManifoldReport) -> list[str]:
    lines: list[str] = []
    for layer, measures in report.sweep.layers.items():
        table = layer_table(report, layer)
        lines += ["", f"## Layer {layer}: means over activations", "", "| " + " | ".join(table.columns) + " |"]
        lines.append("|" + "---:|" * len(table.columns))
        for m, *values in table.rows:
            lines.append("| " + " | ".join([f"{m:g}", *(cell(value) for value in values)]) + " |")
        lines += [
            "",
            f"Δh = h(m) − h(0) of each activation; its principal direction holds {measures.direction_share:.1%} of "
            "Σ‖Δh‖² (100% for a single direction). off-manifold: share of activations past the threshold. "
            "Δh in S: share of Σ‖Δh‖² inside subspace S (undefined at m = 0).",
        ]
    return lines


def _relations(report: ManifoldReport) -> list[str]:
    table = relation_table(report)
    lines = ["", "## Distance and utility", "", "| " + " | ".join(table.columns) + " |", "|---:|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.rows]
    lines += [
        "",
        "One point per multiplier (means over activations). Utility drop: U(0) − U(m). Both R² use the same "
        "3-parameter quadratic, so they compare how well the measured distance and the multiplier itself "
        "predict the utility log-odds.",
    ]
    return lines


def _utility_share(report: ManifoldReport) -> list[str]:
    level = report.sweep.utility_level
    if level is None:
        return []
    lines = [
        "",
        "## Share of Δh in the utility-relevant directions",
        "",
        f"Definition: gᵢ = ∂UtilOddsᵢ/∂δ at δ = 0, for δ one vector added to the residual stream after the block at "
        "every position of pair i, on the unsteered model, over the reference pairs (the first-order effect on "
        f"the pair's utility of a vector intervention δ there). The utility-relevant subspace U holds the top "
        f"principal directions of the uncentred gᵢ explaining {level:g} of Σ‖gᵢ‖². The measured share is "
        "Σ‖P_U Δh‖² / Σ‖Δh‖² over the evaluated activations at each m ≠ 0; a random direction has dim U / d. "
        "The paper's Eq. 16 assumes ω_uᵀΔh ≈ 0, i.e. a share near (or below) the random one.",
        "",
        "| layer | dim U | random share | measured share (mean over m ≠ 0) | min | max |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    name = f"utility@{level:g}"
    for layer, measures in report.sweep.layers.items():
        share = measures.subspace_share[name]
        steered = share[np.asarray(measures.multipliers) != 0]
        dims, d = measures.subspace_dims[name], measures.reference.mean.numel()
        cells = [str(layer), str(dims), cell(dims / d), cell(steered.mean()), cell(steered.min()), cell(steered.max())]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def reading(report: ManifoldReport) -> list[str]:
    """A few plain sentences on what the numbers say (built from them, one per finding)."""
    out = []
    curve = report.curve
    zero, ends = curve.zero_index, (0, len(curve.multipliers) - 1)
    for layer, measures in report.sweep.layers.items():
        knn, off = measures.means()["knn"], measures.off_manifold.mean(1)
        far = max(ends, key=lambda i: knn[i])
        relation = next(r for r in report.relations[layer] if r.measure == "knn")
        rho = f"Spearman ρ = {relation.spearman:.2f}" if isinstance(relation.spearman, float) else relation.spearman
        out.append(
            f"- Layer {layer}: the steered activations move from {knn[zero]:.2f}× the typical unsteered neighbour "
            f"distance at m = 0 to {knn[far]:.2f}× at m = {curve.multipliers[far]:g}, where {off[far]:.0%} of them "
            f"are off-manifold; the mean utility log-odds change by {curve.utility[far] - curve.utility[zero]:+.2f} "
            "there "
            f"({rho} between the k-NN distance and the utility drop over the grid)."
        )
        level = report.sweep.utility_level
        if level is not None:
            name = f"utility@{level:g}"
            share = measures.subspace_share[name][np.asarray(measures.multipliers) != 0].mean()
            random = measures.subspace_dims[name] / measures.reference.mean.numel()
            verdict = "more" if share > random else "less"
            out.append(
                f"  Δh puts {share:.1%} of its squared norm into the {measures.subspace_dims[name]} utility-relevant "
                f"directions, {verdict} than a random direction would ({random:.1%})."
            )
    out += _fit_reading(report.fits, report.fitted_split, report.test_split)
    return out


def _fit_reading(fits: list[FitComparison], fitted_split: str, test_split: str | None) -> list[str]:
    out = []
    for kind in ("preference", "utility"):
        made = [row for row in fits if row.kind == kind and isinstance(row.fitted, BaselineFit)]
        if not made:
            out.append(f"- No {kind} fit could be made on the {fitted_split} curve (see the fits table).")
            continue
        best = min(made, key=lambda row: row.fitted.bic)  # type: ignore[union-attr]
        rq = next((row for row in made if row.model == "rq"), None)
        rq_text = f"the RQ decay reaches R² = {rq.fitted.r2:.3f}" if rq else "the RQ decay could not be fitted"  # type: ignore[union-attr]
        transfer = ""
        if rq is not None and test_split is not None and isinstance(rq.transfer, float):
            transfer = f"; its {fitted_split} parameters give R² = {rq.transfer:.3f} on {test_split}"
        out.append(
            f"- {kind.capitalize()}: {rq_text}{transfer}; the lowest BIC is the {best.model} "
            f"({best.n_params} parameters, R² = {best.fitted.r2:.3f})."  # type: ignore[union-attr]
        )
    return out
