"""``lightning-split analyze RUN_DIR``: measure how far steering moves activations off the unsteered manifold.

Reads a `lightning-split fit` run folder (``config.yaml``, ``control/``, ``tradeoff/test/curve.json``) and writes
``<RUN_DIR>/manifold/manifold.md`` (``manifold-2``… when an earlier analysis is there) with its figures:
distances of the steered activations from the unsteered ones at every multiplier, their relation to the utility
drop, the share of the update in utility-relevant directions, and the paper's curve fits beside simpler baselines
(:mod:`lightning_split.manifold`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "measure the activation manifold of a run's control and fit its curves with baselines (writes manifold.md)"


def parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    from ..manifold.run_folder import AnalysisOptions

    defaults = AnalysisOptions()
    p = argparse.ArgumentParser(prog="lightning-split analyze", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="folder of a `lightning-split fit` run")
    p.add_argument("--curve", type=Path, help="curve.json to analyse (default: RUN_DIR/tradeoff/test/curve.json)")
    p.add_argument(
        "--multipliers", type=float, nargs="+", help="grid to measure, with 0 (default: the curve's own grid)"
    )
    p.add_argument("--out", type=Path, help="empty or new output folder (default: RUN_DIR/manifold, -2, -3…)")
    p.add_argument("--layers", type=int, nargs="+", help="blocks to measure (default: control layer, middle, last)")
    p.add_argument("--levels", type=float, nargs="+", default=list(defaults.levels), help="explained variance")
    p.add_argument("--k", type=int, default=defaults.k, help="neighbours of the k-NN distance")
    p.add_argument("--reference-pairs", type=int, default=defaults.reference_pairs, help="training pairs used")
    p.add_argument("--reference-size", type=int, default=defaults.reference_size, help="k-NN reference rows")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the samples")
    p.add_argument(
        "--utility-level",
        type=float,
        default=defaults.utility_level,
        help="explained share of the utility-gradient subspace (0: skip the gradients)",
    )
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="pairs per batch")
    p.add_argument("--max-rows", type=int, default=defaults.max_rows, help="packed rows per upper-block pass")
    p.add_argument("--backbone", help="backbone to load instead of the control's recorded one")
    p.add_argument("--data-dir", help="folder of the named datasets")
    p.add_argument("--device-map", help="where the backbone goes: cpu, auto, cuda:0…")
    return p


def main(argv: list[str]) -> None:
    """Runs the analysis and prints the report's path."""
    from ..errors import OptionError
    from ..manifold.run_folder import AnalysisOptions, RunFolderError, analyze_run

    args = parser().parse_args(argv)
    try:
        options = AnalysisOptions(
            curve=args.curve,
            multipliers=args.multipliers,
            out=args.out,
            layers=args.layers,
            levels=tuple(args.levels),
            k=args.k,
            reference_pairs=args.reference_pairs,
            reference_size=args.reference_size,
            seed=args.seed,
            utility_level=args.utility_level or None,
            batch_size=args.batch_size,
            max_rows=args.max_rows,
            backbone=args.backbone,
            data_dir=args.data_dir,
            device_map=args.device_map,
        )
        path = analyze_run(args.run_dir, options)
    except (OptionError, RunFolderError) as err:
        parser().error(str(err))
    print(f"lightning-split analyze: wrote {path}")
