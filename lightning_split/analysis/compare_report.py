"""A :class:`~lightning_split.analysis.compare.Comparison` as markdown tables, a frontier PNG and W&B tables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning_split.analysis.compare import COST, GAIN, Comparison, Summary
from lightning_split.analysis.frontier import plot_frontier

MARKDOWN_FILE = "compare.md"
FRONTIER_FILE = "frontier.png"

READOUTS = {
    "equal_cost": "At equal utility cost",
    "chosen": "At each method's chosen m",
}


def table_rows(comparison: Comparison, at: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one read-out table (``at``: ``"equal_cost"`` or ``"chosen"``), cells as text."""
    columns = ["m", COST, GAIN, *comparison.metrics]
    header = ["method", "runs", *(c.replace("_", " ") for c in columns)]
    rows = []
    for method in comparison.methods:
        values = method.at_equal_cost if at == "equal_cost" else method.at_chosen
        cells = [values[c].text() if c in values else "—" for c in columns]
        if at == "equal_cost" and not method.budget_reached:
            cells[0] = f"≥ {cells[0]}"
        rows.append([method.label, str(len(method.runs)), *cells])
    return header, rows


def readout_table(comparison: Comparison, at: str) -> list[str]:
    """The markdown lines of one read-out table (:func:`table_rows`) and the method with the highest gain."""
    header, rows = table_rows(comparison, at)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, "", f"Highest {GAIN}: **{comparison.winner(at)}**."]


def to_markdown(comparison: Comparison, frontier: str | None = FRONTIER_FILE) -> str:
    """The comparison as markdown: setup, the two read-out tables, the rules, notes and the frontier."""
    budget = f"{comparison.budget:g}"
    low, high = comparison.grid_range
    baseline = ", ".join(f"{name} {format_number(value)}" for name, value in comparison.baseline.items())
    lines = [
        f"# Method comparison: {comparison.title}",
        "",
        f"Utility budget: {budget} log-odds. Compared multipliers: [{low:g}, {high:g}]. Unsteered (m = 0): {baseline}.",
    ]
    for at, heading in READOUTS.items():
        lines += ["", f"## {heading}", "", *readout_table(comparison, at)]
    lines += [
        "",
        "## How to read it",
        "",
        f"- {COST}: utility(0) − utility(m), the mean utility log-odds with each pair clamped at m counted at no more "
        "than its value at m = 0 (the report's clamp-safe utility).",
        f"- {GAIN}: pref(m) − pref(0), the preference the report's selection compares (class-balanced for Yes/No "
        "answers, else the mean). The other columns are the curves' own metrics at that m.",
        f"- At equal utility cost: m* is the end of the stretch of positive m, from 0, over which the utility cost "
        f"stays within {budget}; the values are linearly interpolated between the two grid points around the "
        "crossing. “≥ m*”: the cost stays within the budget up to the largest m compared, so the method could go "
        "further.",
        f"- At each method's chosen m: the multiplier the run's report selects (highest preference among m > 0 "
        f"within the budget {budget}; ties to the smaller m).",
        "- Several runs of one method (seeds): mean ± sample standard deviation over them.",
    ]
    if comparison.notes:
        lines += ["", "## Notes", "", *(f"- {note}." for note in comparison.notes)]
    lines += ["", "## Runs", "", "| method | seed | curve |", "|---|---:|---|"]
    for method in comparison.methods:
        lines += [f"| {method.label} | {_seed(r.run.seed)} | {r.run.source} |" for r in method.runs]
    if frontier:
        lines += ["", f"![preference–utility frontier]({frontier})"]
    return "\n".join(lines) + "\n"


def write_comparison(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """Writes ``compare.md`` and ``frontier.png`` into ``out_dir`` (created if missing).

    Returns:
        Paths keyed ``"markdown"`` and ``"frontier_png"``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_frontier(comparison, out_dir / FRONTIER_FILE)
    markdown = out_dir / MARKDOWN_FILE
    markdown.write_text(to_markdown(comparison, png.name))
    return {"markdown": markdown, "frontier_png": png}


def log_to_wandb(comparison: Comparison, paths: dict[str, Path], project: str, name: str | None = None) -> Path:
    """Logs the two tables, the frontier's points and its PNG to a W&B run (offline unless ``WANDB_MODE`` says
    otherwise); returns the run's folder."""
    import wandb

    run = wandb.init(
        project=project,
        name=name,
        dir=str(paths["markdown"].parent),
        mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
        job_type="compare",
        config={"budget": comparison.budget, "grid_range": list(comparison.grid_range), "title": comparison.title},
    )
    payload: dict[str, Any] = {"compare/frontier_plot": wandb.Image(str(paths["frontier_png"]))}
    for at in READOUTS:
        header, rows = table_rows(comparison, at)
        payload[f"compare/{at}"] = wandb.Table(columns=header, data=rows)
    points = [[method.label, *point] for method in comparison.methods for point in method.frontier]
    payload["compare/frontier"] = wandb.Table(columns=["method", "m", COST, GAIN], data=points)
    run.log(payload)
    folder = Path(run.dir).parent
    run.finish()
    return folder


def format_number(value: float | None) -> str:
    """One value as the comparison tables print it (``"—"`` for none)."""
    return "—" if value is None else Summary(value, 0.0, 1).text()


def _seed(seed: int | None) -> str:
    return "—" if seed is None else str(seed)
