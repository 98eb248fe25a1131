"""The manifold report's tables as plain values: ``manifold.md`` formats them, the W&B callback logs them.

Each table is a :class:`ReportTable` (column names, rows of numbers or sentences) built from a
:class:`~lightning_split.manifold.report.ManifoldReport`:

- :func:`layer_table` (one layer) and :func:`distance_table` (every layer, with a ``layer`` column): per
  multiplier, the mean utility log-odds, the mean of every measure over the activations, the share of
  off-manifold activations and the share of ``Δh`` inside each subspace (NaN at m = 0);
- :func:`relation_table`: per layer and measure, Spearman's ρ with the utility drop and the two R²;
- :func:`fit_table`: the paper's curve fits beside the baselines, on the fitted split and on the test split.

A value that could not be computed is the sentence saying why, as the report prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..analysis.baselines import BaselineFit

if TYPE_CHECKING:
    from .report import ManifoldReport

Cell = int | float | str | None
"""A table value: a number, a name, or the sentence saying why a number could not be computed."""


@dataclass(frozen=True)
class ReportTable:
    """Column names and rows of one table of the report.

    Attributes:
        columns: the column names, as the report's header shows them.
        rows: one list of values per row, in column order.
    """

    columns: list[str]
    rows: list[list[Cell]]


def layer_table(report: ManifoldReport, layer: int) -> ReportTable:
    """``m``, mean utility, the mean of every measure, the off-manifold share and ``Δh`` shares at each multiplier
    of ``layer``."""
    measures = report.sweep.layers[layer]
    means = measures.means()
    shares = measures.subspace_share
    off = measures.off_manifold.mean(1)
    columns = ["m", "utility", *means, "off-manifold", *(f"Δh in {name}" for name in shares)]
    rows: list[list[Cell]] = [
        [
            float(m),
            float(report.curve.utility[i]),
            *(float(values[i]) for values in means.values()),
            float(off[i]),
            *(float(share[i]) for share in shares.values()),
        ]
        for i, m in enumerate(measures.multipliers)
    ]
    return ReportTable(columns, rows)


def distance_table(report: ManifoldReport) -> ReportTable:
    """:func:`layer_table` of every measured layer in one table, with a leading ``layer`` column."""
    tables = {layer: layer_table(report, layer) for layer in report.sweep.layers}
    columns = next(iter(tables.values())).columns
    return ReportTable(["layer", *columns], [[layer, *row] for layer, table in tables.items() for row in table.rows])


def relation_table(report: ManifoldReport) -> ReportTable:
    """Per layer and measure: Spearman's ρ (measure, utility drop), R² of utility ~ quadratic(measure) and of
    utility ~ quadratic(m)."""
    columns = ["layer", "measure", "Spearman ρ (measure, utility drop)", "R² utility ~ quad(measure)"]
    columns.append("R² utility ~ quad(m)")
    rows: list[list[Cell]] = [
        [rel.layer, rel.measure, rel.spearman, rel.r2_distance, rel.r2_multiplier]
        for relations in report.relations.values()
        for rel in relations
    ]
    return ReportTable(columns, rows)


def fit_table(report: ManifoldReport) -> ReportTable:
    """Every curve family on the preference and utility curves: parameters, R², AIC and BIC on the fitted split
    and, with a test split, R² of a fit on it and of the fitted split's parameters scored on it."""
    fitted, test = report.fitted_split, report.test_split
    columns = ["curve", "model", "k", f"R² ({fitted} fit)", "AIC", "BIC"]
    if test is not None:
        columns += [f"R² ({test} fit)", f"R² ({fitted} → {test})"]
    rows: list[list[Cell]] = []
    for row in report.fits:
        fit = row.fitted
        cells: list[Cell] = [row.kind, row.model, row.n_params]
        cells += [fit.r2, fit.aic, fit.bic] if isinstance(fit, BaselineFit) else [fit, None, None]
        if test is not None:
            cells += [row.test_fit.r2 if isinstance(row.test_fit, BaselineFit) else row.test_fit, row.transfer]
        rows.append(cells)
    return ReportTable(columns, rows)


__all__ = ["Cell", "ReportTable", "distance_table", "fit_table", "layer_table", "relation_table"]
