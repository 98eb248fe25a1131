"""Comparing steering methods on their test trade-off curves: at equal utility cost and at their chosen m.

Inputs are run folders or ``curve.json`` files (:func:`load_run`); :func:`compare` checks that they answer the
same question (one model, split, NLL reduction, dataset and test pairs), cuts them to the multipliers they
share, and computes per method (runs with the same label are seeds of one method, reported as mean ± standard
deviation):

- **at equal utility cost**: the values at ``m*``, the end of the stretch ``[0, m*]`` of positive multipliers
  over which the utility has dropped by at most the budget from m = 0, linearly interpolated between the two
  grid points around the crossing (:func:`equal_cost_point`);
- **at the chosen m**: the values at the multiplier the run's report selects
  (:func:`~lightning_split.analysis.report.best_multiplier` with the same budget, positive m).

Utility cost is ``utility(0) − utility(m)`` and preference gain ``pref(m) − pref(0)``, with the preference and
utility the report's selection compares (:func:`~lightning_split.analysis.report.selection_preference`: class
balanced for Yes/No answers; :func:`~lightning_split.analysis.report.clamp_safe_utility`). The other columns are
every per-multiplier metric of the curves (:func:`metric_names`), and the judged score (:data:`JUDGED`) of runs
that were evaluated with ``lightning-split evaluate`` into their run folder (:func:`find_judged`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lightning_split.analysis.curve import TradeoffCurve
from lightning_split.analysis.report import best_multiplier, clamp_safe_utility, selection_preference
from lightning_split.errors import OptionError

COST = "utility cost"
GAIN = "preference gain"
NOT_METRICS = frozenset({"multiplier", "utility", "clamped", "n_pairs", "anti_steerable"})
"""Curve columns that are not compared as metrics (utility enters as :data:`COST`)."""

JUDGED = "judged"
"""The judged-score column: the mean judged score over every prompt of a ``lightning-split evaluate`` of the run's
control at each multiplier it generated at (its dataset's aggregate: BiPO behaviour, AxBench harmonic mean),
linearly interpolated between them; not a number outside its grid."""

CONFIG_FILE = "config.yaml"
_CONFIG_LEVELS = 3  # <run>/tradeoff/test/curve.json: the run's config.yaml is three folders up
_DATA_KEYS = ("dataset", "train_file", "val_file", "test_file", "seed", "test_size")


class CompareError(OptionError):
    """The inputs of a comparison cannot be compared as given; the message names them and what to do."""


@dataclass(frozen=True)
class RunCurve:
    """One run's trade-off curve and what its saved config says about it.

    Attributes:
        curve: The sweep.
        source: The ``curve.json`` it was read from.
        label: The method's name in tables and plots (runs sharing a label are seeds of one method).
        dataset: ``data.dataset`` of the run's config (the data files when no name is set); ``None`` without a
            config.
        data: The data settings that decide which pairs the test split holds (dataset, files, seed, size).
        seed: ``seed_everything`` of the run's config.
        report_budget: ``tradeoff.max_utility_drop`` of the run's config (its report's selection budget).
        judged: ``(m, mean judged score)`` of the run's evaluation (:func:`find_judged`); empty without one.
        judged_source: The evaluation's ``results.json``.
    """

    curve: TradeoffCurve
    source: Path
    label: str
    dataset: str | None = None
    data: tuple[tuple[str, Any], ...] = ()
    seed: int | None = None
    report_budget: float | None = None
    judged: tuple[tuple[float, float], ...] = ()
    judged_source: Path | None = None


def find_judged(curve_path: Path) -> tuple[Path, tuple[tuple[float, float], ...]] | None:
    """The newest ``<run>/evaluate-*/results.json`` (``lightning-split evaluate``'s default output) whose recorded
    control hash is that of the run's saved ``control/``, with its :func:`judged_means`; ``None`` when there is none.
    ``<run>`` is the folder up to three levels above the curve that holds ``control/control.json``."""
    from lightning_split.artifacts import CONFIG_FILE as CONTROL_FILE
    from lightning_split.artifacts import CONTROL_DIRNAME, control_sha256

    for folder in list(curve_path.parents)[: _CONFIG_LEVELS + 1]:
        control = folder / CONTROL_DIRNAME
        if (control / CONTROL_FILE).is_file():
            digest = control_sha256(control)
            for results in sorted(folder.glob("evaluate-*/results.json"), reverse=True):
                try:
                    recorded = json.loads(results.read_text())
                    if recorded["settings"]["control_sha256"] == digest:
                        return results, judged_means(recorded)
                except (OSError, ValueError, KeyError, TypeError):
                    continue
            return None
    return None


def judged_means(results: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    """``(m, mean)`` from an evaluation's parsed ``results.json``: its aggregate score over both halves of the
    prompts (weighted by their judged counts), at each multiplier with at least one valid judgment."""
    table = results["table"]["aggregate"]
    means = []
    for m in sorted({float(key) for half in table.values() for key in half}):
        cells = [half[key] for half in table.values() for key in half if float(key) == m]
        valid = [(c["mean"], c["n"]) for c in cells if c.get("mean") is not None and c.get("n")]
        if valid:
            means.append((m, sum(mean * n for mean, n in valid) / sum(n for _, n in valid)))
    return tuple(means)


def find_curve(path: str | Path) -> Path:
    """The test ``curve.json`` of a run folder (``<run>/tradeoff/test/`` after ``fit --test_after_fit``, or
    ``<run>/test-<time>/tradeoff/test/`` after ``lightning-split test``), or ``path`` itself for a file.

    Raises:
        CompareError: ``path`` is missing, or a folder holds no test curve or several.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CompareError(f"{path}: no such run folder or curve file")
    found = sorted(path.glob("tradeoff/test/curve.json")) + sorted(path.glob("test-*/tradeoff/test/curve.json"))
    if not found:
        raise CompareError(
            f"{path}: no test curve (tradeoff/test/curve.json): run the fit with --test_after_fit true, or "
            f"`lightning-split test` on it, or pass a curve.json (e.g. a val-epochNNN one) directly"
        )
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found)
        raise CompareError(f"{path}: several test curves ({listed}); pass the curve.json you mean")
    return found[0]


def load_run(path: str | Path, label: str | None = None) -> RunCurve:
    """Reads a run folder's (or a curve file's) test curve and the run's saved config.

    The config is the ``config.yaml`` found up to three folders above the curve. The label defaults to
    ``<objective> · <form>`` from the config's class paths (the curve's own names without a config).

    Raises:
        CompareError: no curve, or a file that is not a ``curve.json`` written by the trade-off report.
    """
    source = find_curve(path)
    try:
        curve = TradeoffCurve.from_json(source)
    except (ValueError, KeyError, TypeError) as err:  # wrong format, a CSV, a truncated file
        raise CompareError(f"{source}: not a trade-off curve.json ({err}); pass curve.json, not curve.csv") from err
    config = _run_config(source)
    data = config.get("data") or {}
    dataset = data.get("dataset") or data.get("test_file") or data.get("train_file")
    seed = config.get("seed_everything")
    report_budget = (config.get("tradeoff") or {}).get("max_utility_drop")
    judged = find_judged(source)
    return RunCurve(
        curve=curve,
        source=source,
        label=label or method_label(curve, config),
        dataset=None if dataset is None else str(dataset),
        data=tuple((key, data.get(key)) for key in _DATA_KEYS) if config else (),
        seed=None if seed is None or isinstance(seed, bool) else int(seed),
        report_budget=None if report_budget is None else float(report_budget),
        judged=() if judged is None else judged[1],
        judged_source=None if judged is None else judged[0],
    )


def method_label(curve: TradeoffCurve, config: dict[str, Any]) -> str:
    """``"SPLIT · vector"``: the objective's class name from the config (``DiffMean`` for
    ``DiffMeanSteering``), else the curve's objective, and the curve's form."""
    model = config.get("model") or {}
    objective = ((model.get("init_args") or {}).get("objective") or {}).get("class_path")
    model_class = str(model.get("class_path") or "").rsplit(".", 1)[-1]
    if objective:
        name = str(objective).rsplit(".", 1)[-1]
    elif model_class.endswith("Steering") and model_class != "Steering":
        name = model_class.removesuffix("Steering")
    else:
        name = curve.objective or "?"
    return f"{name} · {curve.form}" if curve.form else name


def _run_config(curve_path: Path) -> dict[str, Any]:
    for folder in list(curve_path.parents)[:_CONFIG_LEVELS]:
        config = folder / CONFIG_FILE
        if config.is_file():
            loaded = yaml.safe_load(config.read_text())
            return loaded if isinstance(loaded, dict) else {}
    return {}


def metric_names(curve: TradeoffCurve) -> list[str]:
    """The curve's per-multiplier metrics: its :meth:`~TradeoffCurve.columns` without :data:`NOT_METRICS` and
    the per-class columns (``accuracy[Yes]``)."""
    return [c for c in curve.columns() if c not in NOT_METRICS and "[" not in c]


# ----------------------------------------------------------------------------------------------- equal cost
@dataclass(frozen=True)
class EqualCost:
    """Where a curve's utility cost reaches the budget (:func:`equal_cost_point`).

    Attributes:
        multiplier: ``m*``.
        lower: Index of the grid point at or below ``m*``.
        weight: Interpolation weight of the next grid point (0: ``m*`` is the grid point ``lower``).
        reached: Whether the cost reaches the budget inside the grid (``False``: ``m*`` is the largest m, and
            the method could go further at this cost).
    """

    multiplier: float
    lower: int
    weight: float
    reached: bool

    def value(self, values: Sequence[float]) -> float:
        """``values`` (indexed like the grid) linearly interpolated at ``m*``."""
        low = float(values[self.lower])
        if self.weight == 0.0:
            return low
        return low + self.weight * (float(values[self.lower + 1]) - low)


def equal_cost_point(multipliers: Sequence[float], cost: Sequence[float], budget: float) -> EqualCost:
    """The largest ``m* >= 0`` such that the utility cost stays within ``budget`` on all of ``[0, m*]``.

    Walking up the positive grid from m = 0, the first grid point whose cost exceeds the budget (or is not a
    number) ends the stretch; ``m*`` is where the straight line between it and the point before crosses the
    budget (exact when the cost is linear in m). A grid whose cost never exceeds the budget gives its largest m,
    not reached.

    Args:
        multipliers: The sorted grid, containing 0.
        cost: Utility cost per multiplier (0 at m = 0).
        budget: The allowed cost (>= 0).
    """
    if not budget >= 0:
        raise CompareError(f"--max-utility-drop must be >= 0 log-odds, got {budget}")
    i = list(multipliers).index(0.0)
    while i + 1 < len(multipliers):
        nxt = float(cost[i + 1])
        if not (math.isfinite(nxt) and nxt <= budget):
            if not math.isfinite(nxt):
                return EqualCost(float(multipliers[i]), i, 0.0, True)
            here = float(cost[i])
            weight = (budget - here) / (nxt - here)
            m = multipliers[i] + weight * (multipliers[i + 1] - multipliers[i])
            return EqualCost(float(m), i, float(weight), True)
        i += 1
    return EqualCost(float(multipliers[i]), i, 0.0, False)


# ----------------------------------------------------------------------------------------------- per run
@dataclass(frozen=True)
class RunValues:
    """One run's numbers: the curve on the compared grid, its gain and cost per m, and the two read-outs.

    Attributes:
        run: The run.
        curve: The run's curve cut to the compared range.
        series: ``{name: values per multiplier}``: :data:`COST`, :data:`GAIN` and every metric.
        equal_cost: Where the cost reaches the budget.
        at_equal_cost: ``{"m": m*, name: value at m*}``.
        at_chosen: ``{"m": chosen m, name: value there}`` (the report's selection).
    """

    run: RunCurve
    curve: TradeoffCurve
    series: dict[str, list[float]]
    equal_cost: EqualCost
    at_equal_cost: dict[str, float]
    at_chosen: dict[str, float]


def run_values(run: RunCurve, curve: TradeoffCurve, budget: float) -> RunValues:
    """The gain, cost and metrics of ``curve`` (``run``'s curve, cut) per m and at the two read-outs."""
    zero = curve.zero_index
    utility, preference = clamp_safe_utility(curve), selection_preference(curve)
    rows = curve.rows()
    series: dict[str, list[float]] = {
        COST: [utility[zero] - u for u in utility],
        GAIN: [p - preference[zero] for p in preference],
    }
    for name in metric_names(curve):
        series[name] = [math.nan if row[name] is None else float(row[name]) for row in rows]  # type: ignore[arg-type]
    if run.judged:
        grid, means = zip(*run.judged)
        series[JUDGED] = [
            float(np.interp(m, grid, means)) if grid[0] <= m <= grid[-1] else math.nan for m in curve.multipliers
        ]
    point = equal_cost_point(curve.multipliers, series[COST], budget)
    chosen = curve.multipliers.index(best_multiplier(curve, budget, "positive").multiplier)
    return RunValues(
        run=run,
        curve=curve,
        series=series,
        equal_cost=point,
        at_equal_cost={"m": point.multiplier, **{name: point.value(values) for name, values in series.items()}},
        at_chosen={"m": curve.multipliers[chosen], **{name: values[chosen] for name, values in series.items()}},
    )


# ----------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of one quantity over a method's seeds (``sd`` is 0 for one run)."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """The summary of ``values``."""
        array = np.asarray(values, dtype=np.float64)
        return cls(float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0, len(array))

    def text(self) -> str:
        """``"0.412 ± 0.031"`` (``"0.412"`` for one run, ``"—"`` when not a number)."""
        if not math.isfinite(self.mean):
            return "—"
        return f"{self.mean:.3f}" if self.n == 1 else f"{self.mean:.3f} ± {self.sd:.3f}"


@dataclass(frozen=True)
class Method:
    """The runs of one label (its seeds) and their summaries.

    Attributes:
        label: The method's name.
        runs: Its runs' values.
        multipliers: The grid its runs share (cut to the compared range).
        frontier: ``(cost, gain)`` means over the seeds at each multiplier ``>= 0``.
        at_equal_cost: Summaries of the values at ``m*`` (``"m"`` included).
        at_chosen: Summaries of the values at the chosen m.
        budget_reached: Whether every run's cost reaches the budget inside the grid.
    """

    label: str
    runs: tuple[RunValues, ...]
    multipliers: tuple[float, ...]
    frontier: tuple[tuple[float, float, float], ...]
    at_equal_cost: dict[str, Summary]
    at_chosen: dict[str, Summary]
    budget_reached: bool


def _method(label: str, runs: list[RunValues]) -> Method:
    grids = {tuple(r.curve.multipliers) for r in runs}
    if len(grids) > 1:
        sources = ", ".join(str(r.run.source) for r in runs)
        raise CompareError(
            f"the runs labelled {label!r} ({sources}) were swept on different grids; runs sharing a label are "
            "averaged per multiplier as seeds of one method: give them different labels (--labels) or sweep "
            "them on one grid"
        )
    multipliers = runs[0].curve.multipliers
    names = list(dict.fromkeys(name for r in runs for name in r.at_equal_cost))
    frontier = tuple(
        (m, float(np.mean([r.series[COST][i] for r in runs])), float(np.mean([r.series[GAIN][i] for r in runs])))
        for i, m in enumerate(multipliers)
        if m >= 0
    )
    return Method(
        label=label,
        runs=tuple(runs),
        multipliers=tuple(multipliers),
        frontier=frontier,
        at_equal_cost={n: Summary.of([r.at_equal_cost.get(n, math.nan) for r in runs]) for n in names},
        at_chosen={n: Summary.of([r.at_chosen.get(n, math.nan) for r in runs]) for n in names},
        budget_reached=all(r.equal_cost.reached for r in runs),
    )


# ----------------------------------------------------------------------------------------------- checks
def check_same_question(runs: Sequence[RunCurve]) -> list[str]:
    """Refuses runs that do not answer the same question; returns notes on what could not be checked.

    The runs must share the model, the split, the NLL reduction, the answer classes, the dataset and the data
    settings that pick the test pairs, and the pairs swept (``pair_index``).

    Raises:
        CompareError: naming each differing value and the runs that have it.
    """
    if not runs:
        raise CompareError("nothing to compare: give at least one run folder or curve.json")
    fields = {
        "model": lambda r: r.curve.model,
        "split": lambda r: r.curve.split,
        "NLL reduction": lambda r: r.curve.reduction,
        "answer classes": lambda r: tuple(r.curve.class_names),
        "dataset": lambda r: r.dataset,
        "data settings (which pairs the test split holds)": lambda r: r.data,
        "pairs swept (pair_index)": lambda r: None if r.curve.pair_index is None else tuple(sorted(r.curve.pair_index)),
        "number of pairs": lambda r: tuple(r.curve.n_pairs[:1]),
    }
    for name, value in fields.items():
        groups: dict[Any, list[str]] = {}
        for run in runs:
            groups.setdefault(value(run), []).append(str(run.source))
        if len(groups) > 1:
            listed = "; ".join(f"{_short(key)}: {', '.join(paths)}" for key, paths in groups.items())
            raise CompareError(
                f"cannot compare runs with different {name} ({listed}). Compare runs of one model and dataset "
                "on the same test pairs (same data settings and tradeoff.max_pairs/seed), one comparison each"
            )
    notes = []
    missing = [str(r.source) for r in runs if not r.data]
    if missing:
        notes.append(f"no {CONFIG_FILE} found beside {', '.join(missing)}: dataset and data settings not checked")
    if any(r.curve.pair_index is None for r in runs):
        notes.append("some curves do not record their pairs (pair_index): only the number of pairs was checked")
    return notes


def common_range(runs: Sequence[RunCurve]) -> tuple[float, float]:
    """The multipliers every run was swept over: ``[max of the smallest m, min of the largest m]``.

    Raises:
        CompareError: some run has no positive multiplier.
    """
    low = max(r.curve.multipliers[0] for r in runs)
    high = min(r.curve.multipliers[-1] for r in runs)
    if high <= 0:
        lacking = ", ".join(str(r.source) for r in runs if r.curve.multipliers[-1] <= 0)
        raise CompareError(f"no positive multiplier in {lacking}: there is nothing to compare at m > 0")
    return low, high


def restrict(curve: TradeoffCurve, low: float, high: float) -> TradeoffCurve:
    """``curve`` with only its grid points inside ``[low, high]`` (every per-multiplier field cut alike)."""
    keep = [i for i, m in enumerate(curve.multipliers) if low <= m <= high]
    if len(keep) == len(curve.multipliers):
        return curve
    cut: dict[str, Any] = {}
    for name in ("multipliers", "preference", "utility", "accuracy", "clamped", "n_pairs", "anti_steerable"):
        values = getattr(curve, name)
        cut[name] = None if values is None else [values[i] for i in keep]
    for name in ("pair_preference", "pair_utility", "pair_clamped"):
        values = getattr(curve, name)
        cut[name] = None if values is None else values[keep]
    return replace(curve, **cut)


# ----------------------------------------------------------------------------------------------- compare
@dataclass(frozen=True)
class Comparison:
    """Several methods' trade-off curves compared at one utility budget (:func:`compare`).

    Attributes:
        methods: One per label, in the order the labels first appear.
        budget: The utility budget (log-odds).
        grid_range: The compared multipliers ``(low, high)``.
        metrics: The metric columns (union over the runs, in first-seen order).
        notes: What the checks could not check and how grids were aligned.
        baseline: The first run's values at m = 0 (the unsteered model), by metric.
        title: ``dataset · split · model``.
    """

    methods: tuple[Method, ...]
    budget: float
    grid_range: tuple[float, float]
    metrics: tuple[str, ...]
    notes: tuple[str, ...]
    baseline: dict[str, float]
    title: str

    def winner(self, at: str = "equal_cost") -> str:
        """The label with the highest mean :data:`GAIN` ``at`` ``"equal_cost"`` or ``"chosen"``."""
        pick = {"equal_cost": lambda m: m.at_equal_cost, "chosen": lambda m: m.at_chosen}[at]
        return max(self.methods, key=lambda m: _finite(pick(m)[GAIN].mean)).label


def compare(runs: Sequence[RunCurve], budget: float = 1.0) -> Comparison:
    """Checks, aligns and compares ``runs`` (see the module docstring for the read-outs and rules).

    Grids: every run is cut to the multipliers all runs were swept over (:func:`common_range`), so that each
    method is searched over the same span; nothing is resampled, since the equal-cost point is interpolated
    between a run's own two neighbouring grid points and never extrapolated. Runs sharing a label must share a
    grid (their per-m values are averaged).

    Args:
        runs: The runs (:func:`load_run`).
        budget: The utility budget in log-odds (the run reports' ``max_utility_drop``, 1 by default).

    Raises:
        CompareError: the runs differ in what they measure (:func:`check_same_question`), share no positive
            multiplier, or runs of one label have different grids.
    """
    if not budget >= 0:
        raise CompareError(f"--max-utility-drop must be >= 0 log-odds, got {budget}")
    notes = check_same_question(runs)
    low, high = common_range(runs)
    grids = {tuple(r.curve.multipliers) for r in runs}
    if len(grids) > 1:
        notes.append(
            f"the runs were swept on different grids; each is compared on its points in the common range "
            f"[{low:g}, {high:g}] (points outside it dropped); m* is interpolated between a run's own grid points"
        )
    other_budgets = sorted({str(r.source) for r in runs if r.report_budget not in (None, float(budget))})
    if other_budgets:
        notes.append(
            f"the reports of {', '.join(other_budgets)} selected their m under another utility budget; here every "
            f"method's m is selected under {budget:g}"
        )
    values = [run_values(r, restrict(r.curve, low, high), budget) for r in runs]
    by_label: dict[str, list[RunValues]] = {}
    for value in values:
        by_label.setdefault(value.run.label, []).append(value)
    metrics: dict[str, None] = {}
    for value in values:
        metrics.update(dict.fromkeys(name for name in value.series if name not in (COST, GAIN)))
    notes += [
        f"{JUDGED} ({r.source}): {r.judged_source}, its mean over all judged prompts per multiplier, linearly "
        "interpolated between them"
        for r in runs
        if r.judged_source is not None
    ]
    first = values[0]
    zero = first.curve.zero_index
    curve = first.curve
    return Comparison(
        methods=tuple(_method(label, group) for label, group in by_label.items()),
        budget=float(budget),
        grid_range=(low, high),
        metrics=tuple(metrics),
        notes=tuple(notes),
        baseline={name: series[zero] for name, series in first.series.items() if name not in (COST, GAIN)},
        title=" · ".join(str(p) for p in (first.run.dataset, curve.split, curve.model) if p),
    )


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _short(value: Any) -> str:
    """A value for an error message (a long tuple of pair indices as its length and first items)."""
    if isinstance(value, tuple) and len(value) > 8:
        return f"{len(value)} items ({', '.join(map(str, value[:5]))}, …)"
    return repr(value)
