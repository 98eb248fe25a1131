"""Choosing a multiplier from a sweep and writing the sweep's report (JSON, CSV, markdown, PNG plots)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lightning_split.analysis.curve import COLUMNS, TradeoffCurve
from lightning_split.analysis.fit import CurveFit, fit_preference, fit_utility
from lightning_split.analysis.plots import plot_curve

Signs = Literal["positive", "both"]

_SCOPE = {"positive": "positive", "both": "non-zero"}


@dataclass(frozen=True)
class Selection:
    """The multiplier chosen by :func:`best_multiplier`.

    Attributes:
        multiplier: The chosen m (0 when no steered multiplier qualifies).
        preference: Mean preference log-odds at ``multiplier``.
        utility: Mean utility log-odds at ``multiplier``.
        utility_drop: ``utility(0) - utility(multiplier)``; negative when utility rose.
        baseline_preference: Mean preference log-odds at m = 0.
        baseline_utility: Mean utility log-odds at m = 0.
        max_utility_drop: The allowed drop, in log-odds.
        signs: Which multipliers were considered: ``"positive"`` (m > 0) or ``"both"`` (m != 0).
        within_budget: The considered multipliers whose utility drop is within ``max_utility_drop``.
        sentence: A human-readable account of the choice.
    """

    multiplier: float
    preference: float
    utility: float
    utility_drop: float
    baseline_preference: float
    baseline_utility: float
    max_utility_drop: float
    signs: Signs
    within_budget: tuple[float, ...]
    sentence: str


def best_multiplier(curve: TradeoffCurve, max_utility_drop: float, signs: Signs = "positive") -> Selection:
    """Picks the multiplier with the highest mean preference log-odds within a utility budget.

    The budget is absolute, in log-odds units: a multiplier qualifies when its mean utility log-odds are at
    least ``utility(0) - max_utility_drop``. Log-odds are used rather than a relative drop because utility
    log-odds can be negative or near zero, where a ratio means nothing. m = 0 always qualifies, so when no
    steered multiplier qualifies (or none beats m = 0) the result is m = 0, and the sentence says why.
    Ties in preference go to the smaller |m|. A non-finite mean never qualifies.

    Args:
        curve: The sweep.
        max_utility_drop: Largest allowed fall of mean utility log-odds below their value at m = 0 (>= 0).
        signs: ``"positive"`` considers only m > 0; ``"both"`` also considers m < 0.

    Returns:
        The selection.
    """
    if not max_utility_drop >= 0:
        raise ValueError(f"max_utility_drop must be >= 0 log-odds, got {max_utility_drop}")
    if signs not in _SCOPE:
        raise ValueError(f"signs must be 'positive' or 'both', got {signs!r}")
    ms, pref, util = curve.multipliers, curve.preference, curve.utility
    zero = curve.zero_index
    steered = [i for i, m in enumerate(ms) if (m > 0 if signs == "positive" else m != 0)]
    drops = [util[zero] - u for u in util]
    passing = [i for i in steered if drops[i] <= max_utility_drop and math.isfinite(pref[i])]
    best = max([zero, *passing], key=lambda i: (pref[i], -abs(ms[i])))
    return Selection(
        multiplier=ms[best],
        preference=pref[best],
        utility=util[best],
        utility_drop=drops[best],
        baseline_preference=pref[zero],
        baseline_utility=util[zero],
        max_utility_drop=max_utility_drop,
        signs=signs,
        within_budget=tuple(ms[i] for i in passing),
        sentence=_sentence(curve, best, steered, passing, max_utility_drop, _SCOPE[signs]),
    )


def fit_curve(curve: TradeoffCurve) -> dict[str, CurveFit | str]:
    """The preference and utility fits of a curve, keyed ``"preference"`` and ``"utility"``.

    A fit that cannot be made (too few distinct multipliers, non-finite means) is the error message instead.
    """
    fits: dict[str, CurveFit | str] = {}
    for kind, fitter, values in (
        ("preference", fit_preference, curve.preference),
        ("utility", fit_utility, curve.utility),
    ):
        try:
            fits[kind] = fitter(curve.multipliers, values)
        except ValueError as error:
            fits[kind] = str(error)
    return fits


def write_report(
    curve: TradeoffCurve,
    out_dir: str | Path,
    max_utility_drop: float,
    signs: Signs = "positive",
    fits: dict[str, CurveFit | str] | None = None,
) -> dict[str, Path]:
    """Writes ``curve.json``, ``curve.csv``, ``report.md`` and the PNG plots into ``out_dir``.

    The preference and utility fits are attempted; a fit that cannot be made (too few distinct multipliers,
    non-finite means) is reported as such in ``report.md`` instead of failing the report.

    Args:
        curve: The sweep.
        out_dir: Output folder, created if missing.
        max_utility_drop: Utility budget passed to :func:`best_multiplier`.
        signs: Sign option passed to :func:`best_multiplier`.
        fits: the curve's :func:`fit_curve` result when already computed.

    Returns:
        Paths keyed ``"curve_json"``, ``"curve_csv"``, ``"report_md"``, ``"preference_png"``,
        ``"utility_png"``, ``"tradeoff_png"``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    selection = best_multiplier(curve, max_utility_drop, signs)
    fits = fit_curve(curve) if fits is None else fits
    made = {kind: fit for kind, fit in fits.items() if isinstance(fit, CurveFit)}
    paths = {
        "curve_json": curve.to_json(out_dir / "curve.json"),
        "curve_csv": curve.to_csv(out_dir / "curve.csv"),
    }
    paths.update(plot_curve(curve, out_dir, made.get("preference"), made.get("utility"), selection.multiplier))
    paths["report_md"] = out_dir / "report.md"
    paths["report_md"].write_text(_markdown(curve, selection, fits, paths))
    return paths


def _sentence(
    curve: TradeoffCurve, best: int, steered: list[int], passing: list[int], budget: float, scope: str
) -> str:
    ms, pref, util = curve.multipliers, curve.preference, curve.utility
    zero = curve.zero_index
    base = f"their value at m = 0 ({util[zero]:.3f})"
    if best != zero:
        return (
            f"m = {ms[best]:g} gives the highest mean preference log-odds, {pref[best]:.3f} (vs "
            f"{pref[zero]:.3f} at m = 0), among the {scope} multipliers whose mean utility log-odds stay "
            f"within {budget:g} of {base}; utility log-odds change by {util[best] - util[zero]:+.3f} "
            f"to {util[best]:.3f}."
        )
    if not steered:
        return f"The grid has no {scope} multiplier; selected m = 0 (no steering)."
    if not passing:
        closest = min(steered, key=lambda i: util[zero] - util[i])
        return (
            f"No {scope} multiplier keeps the mean utility log-odds within {budget:g} of {base}: the "
            f"smallest drop, {util[zero] - util[closest]:.3f}, is at m = {ms[closest]:g}. "
            f"Selected m = 0 (no steering)."
        )
    return (
        f"None of the {len(passing)} {scope} multipliers whose mean utility log-odds stay within "
        f"{budget:g} of {base} raises the mean preference log-odds above their value at m = 0 "
        f"({pref[zero]:.3f}); selected m = 0 (no steering)."
    )


def _markdown(
    curve: TradeoffCurve, selection: Selection, fits: dict[str, CurveFit | str], paths: dict[str, Path]
) -> str:
    reduction = {"sum": "sum (summed sequence NLL)", "mean": "mean (per-token mean NLL)"}[curve.reduction]
    setup = [
        ("model", curve.model),
        ("layer", curve.layer),
        ("form", curve.form),
        ("objective", curve.objective),
        ("split", curve.split),
        ("NLL reduction", reduction),
        ("pairs", _pair_count(curve.n_pairs)),
        *((f"extra: {key}", value) for key, value in curve.extra.items()),
    ]
    lines = ["# Steering trade-off report", "", "## Setup", "", "| field | value |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in setup]
    lines += ["", "## Grid", "", "| m | preference | utility | accuracy | clamped | pairs | anti-steerable |"]
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    for row in curve.rows():
        cells = [f"{row['multiplier']:g}", *(_cell(row[column]) for column in COLUMNS[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    if sum(curve.clamped):
        lines += [
            "",
            f"**{sum(curve.clamped)} pair evaluations had the utility denominator clamped** (see the "
            "`clamped` column).",
        ]
    scope = "m > 0" if selection.signs == "positive" else "m ≠ 0"
    lines += [
        "",
        "## Selected multiplier",
        "",
        f"Budget: mean utility log-odds at most {selection.max_utility_drop:g} below their value at m = 0; "
        f"multipliers considered: {scope}.",
        "",
        f"**m = {selection.multiplier:g}** — {selection.sentence}",
        "",
        "## Fits (piecewise rational-quadratic decay, SLSQP, continuous at m = 0)",
        "",
        "| curve | R² | parameters |",
        "|---|---:|---|",
    ]
    for kind, fit in fits.items():
        if isinstance(fit, CurveFit):
            params = ", ".join(f"{name} = {value:.4g}" for name, value in fit.params().items())
            lines.append(f"| {kind} | {fit.r2:.4f} | {params} |")
        else:
            lines.append(f"| {kind} | n/a | not fitted: {fit} |")
    lines += ["", "## Plots", ""]
    plots = {"preference_png": "preference vs m", "utility_png": "utility vs m", "tradeoff_png": "trade-off"}
    lines += [f"![{alt}]({paths[key].name})" for key, alt in plots.items()]
    return "\n".join(lines) + "\n"


def _pair_count(n_pairs: list[int]) -> str:
    low, high = min(n_pairs), max(n_pairs)
    return str(low) if low == high else f"{low}–{high}"


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
