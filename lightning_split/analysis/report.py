"""Choosing a multiplier from a sweep and writing the sweep's report (JSON, CSV, markdown, PNG plots)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lightning_split.analysis.curve import COLUMNS, TradeoffCurve
from lightning_split.analysis.fit import MIN_POINTS_PER_PARAMETER, N_PARAMS, CurveFit, fit_preference, fit_utility
from lightning_split.analysis.plots import plot_curve
from lightning_split.metrics.functional import DEFAULT_EPS

Signs = Literal["positive", "both"]

_SCOPE = {"positive": "positive", "both": "non-zero"}


@dataclass(frozen=True)
class Selection:
    """The multiplier chosen by :func:`best_multiplier`.

    Attributes:
        multiplier: The chosen m (0 when no steered multiplier qualifies).
        preference: Preference log-odds at ``multiplier`` as the rule compares them: the class-balanced mean
            when the answers form classes, else the mean (:func:`selection_preference`).
        utility: Mean utility log-odds at ``multiplier`` with clamped pairs counted at no more than their
            value at m = 0 (:func:`clamp_safe_utility`).
        utility_drop: ``utility(0) - utility(multiplier)``; negative when utility rose.
        baseline_preference: ``preference`` at m = 0.
        baseline_utility: ``utility`` at m = 0.
        max_utility_drop: The allowed drop, in log-odds.
        signs: Which multipliers were considered: ``"positive"`` (m > 0) or ``"both"`` (m != 0).
        within_budget: The considered multipliers whose utility drop is within ``max_utility_drop``.
        clamped: Pairs whose utility denominator is clamped at ``multiplier``.
        n_pairs: Pairs of the sweep.
        rule: The selection rule in one sentence.
        sentence: A human-readable account of the choice, with the clamped count at the chosen m.
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
    clamped: int
    n_pairs: int
    rule: str
    sentence: str


def selection_preference(curve: TradeoffCurve) -> list[float]:
    """Per multiplier, the preference the selection maximises: when the answers form classes, the mean over
    the classes of each class's mean preference log-odds (a control that only learned to say "Yes" gains on
    the "Yes" pairs what it loses on the "No" pairs and scores no gain, whatever the subset's class mix);
    otherwise the mean preference log-odds."""
    return curve.balanced("preference") or list(curve.preference)


def clamp_safe_utility(curve: TradeoffCurve) -> list[float]:
    """Per multiplier, mean utility log-odds with every pair clamped at that m counted at no more than its
    value at m = 0.

    A clamped pair's utility (about 18.4 log-odds, the ``eps`` floor of the denominator) is not a
    measurement, so it can never pay for other pairs' utility losses. Without per-pair arrays the mean itself
    is capped at its m = 0 value wherever any pair is clamped.
    """
    zero = curve.zero_index
    if curve.pair_utility is not None and curve.pair_clamped is not None:
        util = curve.pair_utility
        capped = np.where(curve.pair_clamped, np.minimum(util, util[zero][None, :]), util)
        return capped.mean(axis=1).tolist()
    base = curve.utility[zero]
    return [min(u, base) if clamped else u for u, clamped in zip(curve.utility, curve.clamped)]


def best_multiplier(curve: TradeoffCurve, max_utility_drop: float, signs: Signs = "positive") -> Selection:
    """Picks the multiplier with the highest preference within a utility budget, ungameable by clamping.

    The rule (also :attr:`Selection.rule`): among the considered multipliers, the highest
    :func:`selection_preference` wins, provided the :func:`clamp_safe_utility` stays at least
    ``utility(0) - max_utility_drop``. The budget is absolute, in log-odds units, because utility log-odds
    can be negative or near zero, where a ratio means nothing. m = 0 always qualifies, so when no steered
    multiplier qualifies (or none beats m = 0) the result is m = 0, and the sentence says why. Ties in
    preference go to the smaller |m|. A non-finite value never qualifies.

    Args:
        curve: The sweep.
        max_utility_drop: Largest allowed fall of the utility below its value at m = 0 (>= 0 log-odds).
        signs: ``"positive"`` considers only m > 0; ``"both"`` also considers m < 0.

    Returns:
        The selection.
    """
    if not max_utility_drop >= 0:
        raise ValueError(f"max_utility_drop must be >= 0 log-odds, got {max_utility_drop}")
    if signs not in _SCOPE:
        raise ValueError(f"signs must be 'positive' or 'both', got {signs!r}")
    ms, pref, util = curve.multipliers, selection_preference(curve), clamp_safe_utility(curve)
    zero = curve.zero_index
    steered = [i for i, m in enumerate(ms) if (m > 0 if signs == "positive" else m != 0)]
    drops = [util[zero] - u for u in util]
    passing = [i for i in steered if drops[i] <= max_utility_drop and math.isfinite(pref[i])]
    best = max([zero, *passing], key=lambda i: (pref[i], -abs(ms[i])))
    words = _Words(curve, _SCOPE[signs], pref, util)
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
        clamped=curve.clamped[best],
        n_pairs=curve.n_pairs[best],
        rule=words.rule(max_utility_drop),
        sentence=words.outcome(best, steered, passing, max_utility_drop),
    )


def fit_curve(curve: TradeoffCurve) -> dict[str, CurveFit | str]:
    """The preference and utility fits of a curve, keyed ``"preference"`` and ``"utility"``.

    A fit that cannot be made is the reason instead: fewer than
    :data:`~lightning_split.analysis.fit.MIN_POINTS_PER_PARAMETER` distinct multipliers per parameter (a fit
    there would mean nothing), or non-finite means.
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


class _Words:
    """The selection's rule and outcome in words (``pref`` and ``util``: what the rule compares)."""

    def __init__(self, curve: TradeoffCurve, scope: str, pref: list[float], util: list[float]) -> None:
        self.curve, self.scope, self.pref, self.util = curve, scope, pref, util
        names = ", ".join(curve.class_split())
        self.pref_name = (
            f"class-balanced preference log-odds (the mean over the answer classes {names} of each class's mean)"
            if names
            else "mean preference log-odds"
        )

    def rule(self, budget: float) -> str:
        return (
            f"Among the {self.scope} multipliers, the one with the highest {self.pref_name} is chosen, provided "
            f"the mean utility log-odds, with each pair clamped at that m counted at no more than its value at "
            f"m = 0, stay within {budget:g} of their value at m = 0; ties go to the smaller |m|."
        )

    def outcome(self, best: int, steered: list[int], passing: list[int], budget: float) -> str:
        curve, pref, util, scope = self.curve, self.pref, self.util, self.scope
        ms, zero = curve.multipliers, curve.zero_index
        base = f"their value at m = 0 ({util[zero]:.3f})"
        clamped = f"{curve.clamped[best]} of {curve.n_pairs[best]} pairs are clamped at m = {ms[best]:g}."
        if best != zero:
            return (
                f"m = {ms[best]:g} gives the highest {self.pref_name}, {pref[best]:.3f} (vs {pref[zero]:.3f} at "
                f"m = 0), among the {scope} multipliers whose clamp-safe utility log-odds stay within {budget:g} "
                f"of {base}; they change by {util[best] - util[zero]:+.3f} to {util[best]:.3f}. {clamped}"
            )
        if not steered:
            return f"The grid has no {scope} multiplier; selected m = 0 (no steering). {clamped}"
        if not passing:
            closest = min(steered, key=lambda i: util[zero] - util[i])
            return (
                f"No {scope} multiplier keeps the clamp-safe utility log-odds within {budget:g} of {base}: the "
                f"smallest drop, {util[zero] - util[closest]:.3f}, is at m = {ms[closest]:g}. "
                f"Selected m = 0 (no steering). {clamped}"
            )
        return (
            f"None of the {len(passing)} {scope} multipliers whose clamp-safe utility log-odds stay within "
            f"{budget:g} of {base} raises the {self.pref_name} above their value at m = 0 ({pref[zero]:.3f}); "
            f"selected m = 0 (no steering). {clamped}"
        )


COLUMN_MEANINGS: dict[str, str] = {
    "preference": "mean over pairs of L_n − L_p, the log-odds that the model prefers the matching answer A_p",
    "utility": "mean over pairs of log((e^{−L_p} + e^{−L_n}) / (1 − e^{−L_p} − e^{−L_n})), the log-odds that the "
    "model's probability goes to one of the two answers",
    "accuracy": "share of pairs with L_p < L_n",
    "clamped": f"pairs where e^{{−L_p}} + e^{{−L_n}} ≥ 1 − ε (ε = {DEFAULT_EPS:g}): the utility denominator is "
    "floored at ε and the pair's utility reads about 18.4, a floor rather than a measurement. With per-token "
    "mean NLL the two terms are not probabilities and pass 1 easily (a 3-token “Yes<|im_end|>” answer); with "
    "summed NLL they are probabilities and only reach the floor when the two answers take all the probability. "
    "The selection never counts a clamped pair's utility above its value at m = 0",
    "pairs": "pairs swept",
    "anti-steerable": "share of pairs whose preference moved against the sign of m relative to m = 0 (fell for "
    "m > 0, rose for m < 0); undefined at m = 0",
}
"""What each column of the report's grid means (written under the grid)."""

_CLASS_MEANINGS = (
    "balanced accuracy: the mean over answer classes of each class's accuracy (0.5 for a control that answers "
    "the same thing to everything, whatever the class mix)",
    "accuracy [c] / preference [c]: accuracy and mean preference log-odds over the pairs whose matching answer "
    "is c (a control that learned to say “Yes” shows 1.0 on [Yes] and 0.0 on [No])",
)


def _markdown(
    curve: TradeoffCurve, selection: Selection, fits: dict[str, CurveFit | str], paths: dict[str, Path]
) -> str:
    reduction = {
        "sum": "sum (summed sequence NLL: e^{−L_p} + e^{−L_n} is a probability)",
        "mean": "mean (per-token mean NLL: e^{−L_p} + e^{−L_n} is not a probability and can pass 1)",
    }[curve.reduction]
    split = curve.class_split()
    setup = [
        ("model", curve.model),
        ("layer", curve.layer),
        ("form", curve.form),
        ("objective", curve.objective),
        ("split", curve.split),
        ("NLL reduction", reduction),
        ("pairs", _pairs_used(curve)),
        ("answer classes", _class_counts(curve) if split else "none (free-text answers)"),
        *((f"extra: {key}", value) for key, value in curve.extra.items()),
    ]
    lines = ["# Steering trade-off report", "", "## Setup", "", "| field | value |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in setup]
    lines += ["", "## Grid", "", "| m | preference | utility | accuracy | clamped | pairs | anti-steerable |"]
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    for row in curve.rows():
        cells = [f"{row['multiplier']:g}", *(_cell(row[column]) for column in COLUMNS[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(f"- {name}: {meaning}." for name, meaning in COLUMN_MEANINGS.items())]
    if sum(curve.clamped):
        lines += [
            "",
            f"**{sum(curve.clamped)} pair evaluations had the utility denominator clamped** (see the "
            "`clamped` column).",
        ]
    if split:
        lines += _class_table(curve)
    if curve.sampling:
        lines += ["", _tolerance(curve)]
    scope = "m > 0" if selection.signs == "positive" else "m ≠ 0"
    lines += [
        "",
        "## Selected multiplier",
        "",
        f"Rule ({scope}): {selection.rule}",
        "",
        f"**m = {selection.multiplier:g}** — {selection.sentence}",
        "",
        "## Fits (piecewise rational-quadratic decay, SLSQP, continuous at m = 0)",
        "",
        f"A fit is made only with at least {MIN_POINTS_PER_PARAMETER:g} distinct multipliers per fitted parameter "
        f"(preference {N_PARAMS['preference']}, utility {N_PARAMS['utility']}); with fewer, the curve follows "
        "almost any points and its R² and parameters would mean nothing.",
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
    if curve.pair_index is not None:
        lines += ["", "## Pairs", "", f"Indices (rows of the {curve.split or 'split'}): {_ranges(curve.pair_index)}."]
    lines += ["", "## Plots", ""]
    plots = {"preference_png": "preference vs m", "utility_png": "utility vs m", "tradeoff_png": "trade-off"}
    lines += [f"![{alt}]({paths[key].name})" for key, alt in plots.items()]
    return "\n".join(lines) + "\n"


def _class_table(curve: TradeoffCurve) -> list[str]:
    split = curve.class_split()
    balanced = curve.balanced("accuracy")
    assert balanced is not None
    header = [
        "m",
        "balanced accuracy",
        *(f"{value} [{name}]" for name in split for value in ("accuracy", "preference")),
    ]
    lines = ["", "## By matching answer", "", "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for i, m in enumerate(curve.multipliers):
        cells = [f"{m:g}", _cell(balanced[i])]
        cells += [_cell(per_class[value][i]) for per_class in split.values() for value in ("accuracy", "preference")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", *(f"- {meaning}." for meaning in _CLASS_MEANINGS)]


def _pairs_used(curve: TradeoffCurve) -> str:
    count = _pair_count(curve.n_pairs)
    if not curve.sampling:
        return f"{count}: every pair evaluated"
    sampling = curve.sampling
    balance = "balanced by answer class" if curve.classes else "free-text answers, so a plain random sample"
    return (
        f"{count} of the {sampling['evaluated']} pairs evaluated: a seeded subset (max_pairs {sampling['max_pairs']}, "
        f"seed {sampling['seed']}), {balance}; indices under Pairs and in curve.json (pair_index)"
    )


def _class_counts(curve: TradeoffCurve) -> str:
    assert curve.pair_class is not None
    return ", ".join(f"{curve.class_label(c)} {curve.pair_class.count(c)}" for c in curve.classes)


def _tolerance(curve: TradeoffCurve) -> str:
    """How far the subset's means may sit from the means over every evaluated pair (2 standard errors)."""
    n, total = curve.n_pairs[0], int(curve.sampling["evaluated"])
    if curve.pair_preference is None or n < 2:
        return f"Sampling error: not estimated ({n} pairs)."
    correction = math.sqrt(max(total - n, 0) / max(total - 1, 1))  # finite population: 0 when all are swept

    def two_se(values: np.ndarray) -> float:
        return float(np.nanmax(2 * values.std(axis=1, ddof=1) / math.sqrt(n) * correction))

    pref, acc = two_se(curve.pair_preference), two_se((curve.pair_preference > 0).astype(np.float64))
    return (
        f"Sampling error of this subset: the means over all {total} evaluated pairs are expected within "
        f"±{pref:.3f} (preference) and ±{acc:.3f} (accuracy) of the values above (2 standard errors, "
        "finite-population corrected, largest over the grid). Numbers from other subsets or the full split "
        "differ by that much."
    )


def _ranges(index: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` as ``"0–2, 5, 7–8"``."""
    parts: list[str] = []
    values = sorted(index)
    start = prev = values[0]
    for i in [*values[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def _pair_count(n_pairs: list[int]) -> str:
    low, high = min(n_pairs), max(n_pairs)
    return str(low) if low == high else f"{low}–{high}"


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
