"""``lightning-split compare RUN [RUN ...]``: several methods' test curves on one frontier and in one table.

Each RUN is a run folder (its ``tradeoff/test/curve.json``, or the one of its ``test-<time>/`` stage) or a
``curve.json``. Runs with the same label are seeds of one method (mean ± standard deviation). Writes
``compare.md`` and ``frontier.png`` into ``--out``, and with ``--wandb`` logs them to a W&B run (offline unless
``WANDB_MODE=online``). The rules are in :mod:`lightning_split.analysis.compare`.
"""

from __future__ import annotations

import argparse

HELP = "compare methods' test trade-off curves at equal utility cost: one frontier PNG and one markdown table"


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(prog="lightning-split compare", description=__doc__.split("\n\n")[1])
    p.add_argument("runs", nargs="+", help="run folders or curve.json files")
    p.add_argument("--out", default="runs/compare", help="output folder (default: runs/compare)")
    p.add_argument(
        "--max-utility-drop",
        type=float,
        default=1.0,
        help="utility budget in log-odds, as the run reports' tradeoff.max_utility_drop (default 1)",
    )
    p.add_argument(
        "--labels",
        nargs="+",
        help="one label per RUN, in order (default: objective · form from each run's config.yaml); "
        "runs sharing a label are averaged as seeds",
    )
    p.add_argument("--wandb", action="store_true", help="also log the tables and the frontier to W&B")
    p.add_argument("--wandb-project", default="lightning_split", help="W&B project (default: lightning_split)")
    return p


def main(argv: list[str]) -> None:
    """Runs the comparison and prints where its files are."""
    args = parser().parse_args(argv)
    from lightning_split.analysis.compare import CompareError, compare, load_run
    from lightning_split.analysis.compare_report import log_to_wandb, write_comparison

    if args.labels is not None and len(args.labels) != len(args.runs):
        raise CompareError(f"--labels: {len(args.labels)} labels for {len(args.runs)} runs; give one per run")
    labels = args.labels or [None] * len(args.runs)
    runs = [load_run(path, label) for path, label in zip(args.runs, labels)]
    comparison = compare(runs, args.max_utility_drop)
    paths = write_comparison(comparison, args.out)
    lines = [f"  table: {paths['markdown']}", f"  frontier: {paths['frontier_png']}"]
    lines.append(f"  highest preference gain at equal utility cost: {comparison.winner()}")
    if args.wandb:
        folder = log_to_wandb(comparison, paths, args.wandb_project)
        lines.append(f"  W&B run: {folder}")
    print("lightning-split compare: outputs", *lines, sep="\n", flush=True)
