"""Gathers the ``lightning-split analyze`` reports of several runs into the paper's table layout.

Reads ``<run>/manifold/manifold.md`` (or ``--report-name``) of each run folder given and prints markdown:

1. **R² of the paper's RQ fits** per form × objective and dataset, as in the paper's Tables 2 (fit on the fitted
   split), 6 (fit on the test split) and 7 (fitted-split parameters scored on test), with the paper's
   Gemma-2-9B-IT values beside ours where the paper has the same form and method (it reports SFT, RePS and
   DiffMean, not SPLIT).
2. **The RQ fit against the baselines**: the model with the lowest BIC on the fitted split, per readout.
3. **Distance and utility**: Spearman ρ between each measured distance and the utility drop at the control's
   layer and the last layer, and the share of Δh in the utility-relevant directions against a random direction's.

Usage:
    python scripts/manifold_tables.py runs/grid/psychopathy/*/seed42 runs/grid/power-seeking/*/seed42 > tables.md
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import yaml

# The paper's Table 2 / 6 / 7 values for Gemma-2-9B-IT (``../shared/docs/paper-notes.md``), by (form, method):
# (preference PSY, preference PWR, utility PSY, utility PWR).
PAPER = {
    "table 2": {
        ("local_weight", "sft"): (0.97, 0.98, 0.98, 0.99),
        ("local_weight", "reps"): (0.99, 0.99, 0.96, 0.99),
        ("lora", "sft"): (0.92, 0.99, 0.98, 0.99),
        ("lora", "reps"): (0.83, 0.99, 0.99, 0.99),
        ("vector", "diffmean"): (0.97, 0.99, 0.97, 0.99),
        ("vector", "sft"): (0.93, 0.97, 0.99, 0.99),
        ("vector", "reps"): (0.99, 0.98, 0.99, 0.99),
    },
}
DATASETS = {"psychopathy": "PSY", "power-seeking": "PWR"}
READOUTS = ("Preference", "Utility")


class ReportError(ValueError):
    """A report that does not have the expected sections (written by another version of ``analyze``)."""


def table_after(lines: list[str], marker: str, path: Path) -> list[list[str]]:
    """The rows (cells stripped, header and rule dropped) of the first markdown table after the line ``marker``."""
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == marker)
    except StopIteration:
        raise ReportError(f"{path}: no line {marker!r}; rerun `lightning-split analyze`") from None
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    if len(rows) < 3:
        raise ReportError(f"{path}: the table after {marker!r} is empty")
    return rows[2:]


def read_report(run: Path, report_name: str) -> dict:
    """What the tables need from one run's report and config."""
    path = run / "manifold" / report_name
    if not path.is_file():
        raise ReportError(f"{path} not found: run `lightning-split analyze {run}` first")
    lines = path.read_text().splitlines()
    setup = {row[0]: row[1] for row in table_after(lines, "## Setup", path)}
    form, objective = setup["control"].split(",")[0].split()
    config = yaml.safe_load((run / "config.yaml").read_text())
    fits = {
        readout: {row[0]: row for row in table_after(lines, f"**{readout} log-odds**", path)} for readout in READOUTS
    }
    relations = table_after(lines, "## Distance and utility", path)
    shares = table_after(lines, "## Share of Δh in the utility-relevant directions", path)
    return {
        "run": run,
        "dataset": config["data"]["dataset"],
        "form": form,
        "objective": objective,
        "layers": setup["layers"].split(", "),
        "fits": fits,
        "relations": relations,
        "shares": shares,
    }


def r2_table(reports: list[dict]) -> list[str]:
    """Tables 2, 6 and 7 for the RQ fits, ours beside the paper's Table 2."""
    lines = [
        "| form | objective | dataset | pref R² fit (T2) | pref R² test fit (T6) | pref train → test (T7) "
        "| util R² fit (T2) | util R² test fit (T6) | util train → test (T7) | paper T2 pref / util (Gemma-2-9B) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in reports:
        ours = []
        for readout in READOUTS:
            row = r["fits"][readout].get("rq")
            ours += [row[2], row[5], row[6]] if row and len(row) >= 7 else ["—", "—", "—"]
        paper = PAPER["table 2"].get((r["form"], r["objective"]))
        column = list(DATASETS).index(r["dataset"]) if r["dataset"] in DATASETS else None
        beside = f"{paper[column]:.2f} / {paper[2 + column]:.2f}" if paper and column is not None else "—"
        lines.append(f"| {r['form']} | {r['objective']} | {r['dataset']} | " + " | ".join(ours) + f" | {beside} |")
    return lines


def bic(text: str) -> float | None:
    """A BIC cell as a number (``−∞ (exact fit)`` is −inf); ``None`` for a fit not made."""
    if text.startswith("−∞"):
        return -math.inf
    try:
        return float(text)
    except ValueError:
        return None


def best_fit_table(reports: list[dict]) -> list[str]:
    """The lowest-BIC model per readout beside the RQ fit."""
    lines = [
        "| form | objective | dataset | readout | lowest BIC (k) | its R² fit / train → test "
        "| RQ R² fit / train → test |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        for readout in READOUTS:
            rows = [row for row in r["fits"][readout].values() if len(row) >= 7 and bic(row[4]) is not None]
            if not rows:
                lines.append(f"| {r['form']} | {r['objective']} | {r['dataset']} | {readout} | no fit | | |")
                continue
            best = min(rows, key=lambda row: bic(row[4]))
            rq = r["fits"][readout].get("rq")
            rq_cells = f"{rq[2]} / {rq[6]}" if rq and len(rq) >= 7 else "not fitted"
            lines.append(f"| {r['form']} | {r['objective']} | {r['dataset']} | {readout} | {best[0]} ({best[1]}) | "
                         f"{best[2]} / {best[6]} | {rq_cells} |")  # fmt: skip
    return lines


def distance_table(reports: list[dict]) -> list[str]:
    """Spearman ρ of each distance with the utility drop at the control's and the last layer; Δh's utility share."""
    measures = ("residual@0.9", "knn", "mahalanobis", "projection")
    lines = [
        "| form | objective | dataset | layer | " + " | ".join(f"ρ {m}" for m in measures)
        + " | R² util ~ quad(knn) / quad(m) | Δh share in utility directions (random) |",
        "|---|---|---|---:|" + "---:|" * len(measures) + "---|---|",
    ]  # fmt: skip
    for r in reports:
        by = {(row[0], row[1]): row for row in r["relations"]}
        shares = {row[0]: row for row in r["shares"]}
        for layer in (r["layers"][0], r["layers"][-1]):
            rho = [by.get((layer, m), ["", "", "—"])[2] for m in measures]
            knn = by.get((layer, "knn"))
            r2 = f"{knn[3]} / {knn[4]}" if knn else "—"
            share = shares.get(layer)
            share_cell = f"{share[3]} ({share[2]})" if share else "—"
            lines.append(f"| {r['form']} | {r['objective']} | {r['dataset']} | {layer} | " + " | ".join(rho)
                         + f" | {r2} | {share_cell} |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    """Prints the three tables for the runs given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders analysed by `lightning-split analyze`")
    parser.add_argument("--report-name", default="manifold.md", help="report file under <run>/manifold/")
    args = parser.parse_args(argv)
    try:
        reports = [read_report(run, args.report_name) for run in args.runs]
    except (ReportError, OSError, KeyError) as err:
        print(f"manifold_tables: {err}", file=sys.stderr)
        return 2
    order = {"vector": 0, "lora": 1, "local_weight": 2}
    reports.sort(key=lambda r: (r["dataset"], order.get(r["form"], 9), r["objective"]))
    sections = [
        ("R² of the RQ fits (the paper's Tables 2, 6, 7)", r2_table(reports)),
        ("The RQ fit against the baselines (lowest BIC on the fitted split)", best_fit_table(reports)),
        ("Distance and utility drop", distance_table(reports)),
    ]
    for title, lines in sections:
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
