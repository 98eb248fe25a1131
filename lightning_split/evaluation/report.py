"""The evaluation's files: ``judged.jsonl`` (every judged generation), ``results.json`` (tables, choice, records),
``report.md`` (the markdown section) and, when W&B is on, a table of sample generations.

Each file is written to a temporary name and moved into place, so a killed run never leaves one half-written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..files import write_text_atomic
from .judging import AGGREGATE
from .prompts import AXBENCH, HALVES
from .protocol import EvaluationResult
from .selection import NO_VALID, Cell

JUDGED_FILE = "judged.jsonl"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
WANDB_SAMPLES = 200


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cell(cell: Cell) -> str:
    excluded = f", {cell.excluded} excl." if cell.excluded else ""
    return f"{_num(cell.mean)} (n={cell.n}{excluded})"


def results_dict(result: EvaluationResult) -> dict[str, Any]:
    """Everything but the generations, JSON-serialisable (``results.json``)."""
    table = {
        criterion: {half: {str(m): asdict(c) for m, c in cells.items()} for half, cells in by_half.items()}
        for criterion, by_half in result.table.items()
    }
    logodds = {
        "source": result.logodds.source,
        "note": result.logodds.note,
        "values": {k: {str(m): v for m, v in vals.items()} for k, vals in result.logodds.values.items()},
    }
    return {
        "dataset": result.dataset,
        "multipliers": result.multipliers,
        "split": result.halves,
        "table": table,
        "choice": None if result.choice is None else asdict(result.choice),
        "logodds": logodds,
        "correlations": [asdict(c) for c in result.correlations],
        "judge": result.judge,
        "rubric": result.rubric,
        "counts": result.counts,
        "generated": result.generated,
        "settings": result.settings,
    }


def markdown(result: EvaluationResult) -> str:
    """The report section: judged scores vs m on both halves, the choice, log-odds and correlations, the judge."""
    scale = "–".join(f"{v:g}" for v in result.rubric["scale"])
    sizes = {h: sum(v == h for v in result.halves.values()) for h in HALVES}
    choice = result.choice
    chosen = (
        f"**Chosen m = {choice.m:g}** ({choice.rule}): selection mean {_num(choice.selection_mean)}, "
        f"**held-out mean {_num(choice.held_out_mean)}**."
        if choice is not None
        else f"**No multiplier can be chosen**: {NO_VALID}."
    )
    lines = [
        f"## Judged evaluation ({result.dataset})",
        "",
        f"Prompts: {sizes['selection']} in the selection half, {sizes['held-out']} held out (split recorded in "
        f"`{RESULTS_FILE}`); {len(result.judged)} generations; "
        f"generation settings `{result.settings.get('generation')}`.",
        f"Scores: {result.rubric['name']} rubric, scale {scale}"
        + (
            f" per criterion; `{AGGREGATE}` is their harmonic mean (0 if any is 0)."
            if result.dataset == AXBENCH
            else "."
        ),
        "Unparseable or failed judgments are excluded from the means and counted (`excl.`).",
        "",
        chosen,
    ]
    if choice is not None and len(choice.tied) > 1:
        lines.append(f"Tied on the selection half: {', '.join(f'{m:g}' for m in choice.tied)}.")
    unchoosable = result.multipliers if choice is None else choice.unchoosable
    if unchoosable:
        listed = ", ".join(f"{m:g}" for m in unchoosable)
        lines.append(f"Not choosable (no valid judgment on the selection half): {listed}.")
    header = ["m", *(f"{c} {h}" for c in result.table for h in HALVES)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in result.multipliers:
        cells = [_cell(result.table[c][h][m]) for c in result.table for h in HALVES]
        mark = " ←" if choice is not None and m == choice.m else ""
        lines.append(f"| {m:g}{mark} | " + " | ".join(cells) + " |")
    lines += ["", "### Log-odds beside the judged scores", ""]
    if not result.logodds.values:
        lines.append(f"Log-odds curve absent: {result.logodds.note}.")
    else:
        lines += [f"Source: {result.logodds.source}.", "", "| m | preference | utility |", "|---|---|---|"]
        lines += [
            f"| {m:g} | {_num(result.logodds.values['preference'][m])} | {_num(result.logodds.values['utility'][m])} |"
            for m in result.multipliers
        ]
        lines += [
            "",
            "Spearman's rho across m (judged means over both halves); low or negative values mark where teacher-forced "
            "log-odds and judged free generation disagree:",
            "",
            "| log-odds | judged | rho | n m |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c.logodds} | {c.judged} | {_num(c.rho) if c.rho is not None else c.note} | {c.n} |"
            for c in result.correlations
        ]
    judge = result.judge
    lines += [
        "",
        "### Judge record",
        "",
        f"- judge: `{judge['model']}` ({judge['kind']}, {judge['endpoint']}), settings `{judge['settings']}`, "
        f"options `{judge['options']}`",
        f"- rubric: {result.rubric['name']}, parse rule: {result.rubric['parse_rule']}",
        *(
            f"- template `{c}`: {t['source']} sha256 `{t['sha256'][:16]}`"
            for c, t in result.rubric["templates"].items()
        ),
        "- counts: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()),
        "- judged numbers depend on the judge: numbers from different judges are not comparable, and a small local "
        "judge (e.g. a 135M model) is weak: use it to check the plumbing, not to report results.",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(result: EvaluationResult, folder: str | Path) -> dict[str, Path]:
    """Writes ``judged.jsonl``, ``results.json`` and ``report.md`` into ``folder``; returns their paths."""
    folder = Path(folder)
    paths = {"judged": folder / JUDGED_FILE, "results": folder / RESULTS_FILE, "report": folder / REPORT_FILE}
    lines = "".join(json.dumps(j.as_dict(), ensure_ascii=False) + "\n" for j in result.judged)
    write_text_atomic(paths["judged"], lines)
    write_text_atomic(paths["results"], json.dumps(results_dict(result), indent=2))
    write_text_atomic(paths["report"], markdown(result))
    return paths


def log_wandb(result: EvaluationResult, folder: str | Path, project: str, samples: int = WANDB_SAMPLES) -> None:
    """Logs a W&B table of sample generations (prompt, half, m, text, each score) and the chosen m's scores.

    The run is offline unless ``WANDB_MODE`` says otherwise; its files go under ``folder/wandb``.
    """
    import wandb

    criteria = list(result.table)
    columns = ["prompt_id", "half", "m", "prompt", "text", *criteria]
    rows = [[j.prompt_id, j.half, j.m, j.prompt, j.text, *(j.scores.get(c) for c in criteria)] for j in result.judged]
    run = wandb.init(
        project=project,
        dir=str(folder),
        mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
        job_type="evaluate",
        config={"dataset": result.dataset, "multipliers": result.multipliers, "judge": result.judge},
    )
    try:
        run.log(
            {
                "evaluate/samples": wandb.Table(columns=columns, data=rows[:samples]),
                "evaluate/chosen_m": None if result.choice is None else result.choice.m,
                "evaluate/held_out_mean": None if result.choice is None else result.choice.held_out_mean,
            }
        )
    finally:
        run.finish()
