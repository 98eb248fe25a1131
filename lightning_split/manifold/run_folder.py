"""The manifold analysis of a training run's folder: its saved control, config and trade-off curve.

A run folder written by ``lightning-split fit`` holds ``config.yaml`` (the data section rebuilds the same
splits), ``control/`` (the saved control) and ``tradeoff/<split>/curve.json`` (the
:class:`~lightning_split.callbacks.TradeoffCurveCallback` sweep, with the pairs it used). :func:`analyze_run`
measures the curve's pairs over the curve's grid (or another, ``multipliers``) against unsteered training
activations and writes ``manifold.md`` with its figures into the output folder. :func:`analyze_control` is the
part that works on a control and pairs in memory; :class:`~lightning_split.callbacks.ManifoldAnalysisCallback`
calls it at the end of ``trainer.test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..analysis.baselines import compare_fits
from ..analysis.curve import TradeoffCurve
from ..artifacts import CONTROL_DIRNAME, SteeredModel, load_steered
from ..data.batch import PairBatch
from ..data.datamodule import PairCollator, PolarityDataModule
from ..data.tokenize import TokenizedPair
from ..engine import PairScorer
from ..errors import OptionError
from ..files import fresh_folder
from ..grid import check_grid
from ..interventions.base import Intervention
from ..layout import ModelLayout
from ..steering import Positions
from ..sweep import curve_from_losses
from .capture import check_layers
from .measure import measure_manifold
from .plots import plot_distance_vs_m, plot_preference_plane
from .relate import relate
from .report import ManifoldReport, write_markdown

DEFAULT_CURVE = Path("tradeoff") / "test" / "curve.json"
"""The run's test sweep, relative to the run folder."""

REPORT_FILE = "manifold.md"
"""The report's file name in its output folder."""


class RunFolderError(ValueError):
    """The run folder lacks what the analysis needs; the message names the file and what to do."""


@dataclass
class AnalysisOptions:
    """Settings of :func:`analyze_run` (the ``lightning-split analyze`` options).

    Attributes:
        curve: the curve file (``None``: ``<run>/tradeoff/test/curve.json``).
        multipliers: the grid measured on the curve's pairs (``None``: the curve's own grid; must hold 0). A finer
            or wider grid than the run swept gives the curve fits the points they need.
        out: output folder (``None``: ``<run>/manifold``, or ``manifold-2``… when that exists); an explicit
            folder that holds anything is refused.
        layers: blocks measured (``None``: the control's layer, the middle of the blocks above it, the last).
        levels: explained-variance levels of the principal subspaces.
        k: neighbours of the k-NN distance.
        reference_pairs: training pairs (a seeded sample) that define the unsteered reference.
        reference_size: activations per layer kept for the k-NN reference.
        seed: seed of both samples.
        utility_level: explained share of the utility-relevant subspace (``None``: not measured).
        batch_size: pairs per batch.
        max_rows: packed rows per upper-block pass.
        backbone: load this backbone instead of the one recorded with the control.
        data_dir: folder of the named datasets (``None``: as the config says).
        device_map: where the backbone goes (``"cpu"``, ``"auto"``, ``"cuda:0"``…).
    """

    curve: Path | None = None
    multipliers: Sequence[float] | None = None
    out: Path | None = None
    layers: Sequence[int] | None = None
    levels: Sequence[float] = (0.9, 0.99)
    k: int = 10
    reference_pairs: int = 128
    reference_size: int = 2048
    seed: int = 0
    utility_level: float | None = 0.9
    batch_size: int = 8
    max_rows: int = 64
    backbone: str | None = None
    data_dir: str | None = None
    device_map: str | None = None

    def __post_init__(self) -> None:
        """Checks the counts and shares.

        Raises:
            OptionError: the first setting out of range, named as a field and as its ``analyze`` option.
        """
        for name in ("k", "reference_pairs", "reference_size", "batch_size", "max_rows"):
            if getattr(self, name) < 1:
                raise OptionError(f"{_named(name)} must be >= 1, got {getattr(self, name)}")
        if not self.levels or not all(0 < level <= 1 for level in self.levels):
            raise OptionError(f"{_named('levels')} must be shares in (0, 1], got {list(self.levels)}")
        if self.utility_level is not None and not 0 < self.utility_level <= 1:
            raise OptionError(
                f"{_named('utility_level')} must lie in (0, 1] (None, or 0 on the command line: not measured), "
                f"got {self.utility_level}"
            )


def _named(field: str) -> str:
    """``reference_pairs (--reference-pairs)``: a setting as the callback and as ``analyze`` spell it."""
    return f"{field} (--{field.replace('_', '-')})"


def default_layers(first: int, num_layers: int) -> list[int]:
    """The control's layer, the middle of the blocks above it and the last block (distinct, ascending)."""
    last = num_layers - 1
    return sorted({first, (first + last) // 2, last})


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunFolderError(
            f"{path} not found: pass the folder of a `lightning-split fit` run (it writes config.yaml)"
        )
    config = yaml.safe_load(path.read_text()) or {}
    data = config.get("data")
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} has no `data:` section to rebuild the splits from")
    return data


def _read_curve(run_dir: Path, curve: Path | None) -> TradeoffCurve:
    path = curve if curve is not None else run_dir / DEFAULT_CURVE
    if not path.is_file():
        found = sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("**/curve.json"))
        hint = f"curves in the run folder: {found}; choose one with --curve" if found else "run `lightning-split test`"
        raise RunFolderError(f"{path} not found ({hint})")
    curve_obj = TradeoffCurve.from_json(path)
    if curve_obj.pair_index is None:
        raise RunFolderError(f"{path} does not list its pairs (pair_index); sweep again with this version")
    return curve_obj


def _grid_line(grid: Sequence[float], swept: Sequence[float]) -> str:
    """The measured grid, and the run's own when they differ."""
    line = ", ".join(f"{m:g}" for m in grid)
    return line if list(grid) == list(swept) else f"{line} (the run swept {', '.join(f'{m:g}' for m in swept)})"


def _batches(items: Sequence[TokenizedPair], rows: Sequence[int], batch_size: int, pad_id: int) -> list[PairBatch]:
    collate = PairCollator(pad_id)
    chosen = [(int(i), items[int(i)]) for i in rows]
    return [collate(chosen[j : j + batch_size]) for j in range(0, len(chosen), batch_size)]


def _split_items(data: PolarityDataModule, split: str, path: Path) -> list[TokenizedPair]:
    name = {"validation": "validation", "val": "validation", "test": "test", "train": "train"}.get(split)
    if name is None:
        raise RunFolderError(f"{path}: the curve's split {split!r} is not train, validation or test")
    return data.tokenized(name)


@dataclass(frozen=True)
class AnalysedControl:
    """The control an analysis measures, and what the report says about it.

    Attributes:
        scorer: the packed pair engine of its backbone.
        control: the interventions.
        positions: the steered tokens the control was trained with.
        form: the control form's registry name.
        objective: the objective's registry name (``None``: not known).
        model: the backbone as the report names it.
        run: the run folder the report names.
    """

    scorer: PairScorer
    control: Sequence[Intervention]
    positions: Positions
    form: str
    objective: str | None
    model: str | None
    run: str


def measured_layers(layout: ModelLayout, control: Sequence[Intervention], layers: Sequence[int] | None) -> list[int]:
    """``layers`` (``None``: :func:`default_layers` from the control's first layer), sorted and checked.

    Raises:
        ValueError: a layer the analysis cannot read (:func:`~lightning_split.manifold.capture.check_layers`).
    """
    first = min(iv.layer for iv in control)
    return check_layers(layout, control, layers or default_layers(first, layout.num_layers))


def analyze_control(
    subject: AnalysedControl,
    train: Sequence[TokenizedPair],
    evaluated: Sequence[TokenizedPair],
    curve: TradeoffCurve,
    curve_name: str,
    layers: Sequence[int],
    options: AnalysisOptions,
    out: Path,
    progress: bool = True,
) -> ManifoldReport:
    """Measures a control on a curve's pairs and grid and writes ``manifold.md`` and its figures into ``out``.

    The unsteered reference is a seeded sample of ``options.reference_pairs`` of the ``train`` pairs; the
    measured pairs are ``curve.pair_index`` of ``evaluated`` (the curve's split), over ``options.multipliers``
    (checked by the caller; ``None``: ``curve.multipliers``).
    ``options.curve``, ``out``, ``layers``, ``backbone``, ``data_dir`` and ``device_map`` are not read here.

    Args:
        subject: the control and its description.
        train: the training split's pairs (the reference is sampled from them).
        evaluated: the pairs of the curve's split, in split order.
        curve: the saved curve (its pairs, grid and reduction; the report compares the measuring pass with it and
            scores the train-fitted curve parameters on it). It must list its pairs (``pair_index``).
        curve_name: how the report names the curve (its file).
        layers: the checked layers (:func:`measured_layers`).
        options: the analysis settings.
        out: the output folder (created).
        progress: show the measuring passes' progress.

    Returns:
        The report written to ``out / REPORT_FILE``.
    """
    assert curve.pair_index is not None, "the curve must list its pairs"
    grid = [float(m) for m in options.multipliers] if options.multipliers is not None else list(curve.multipliers)
    rng = np.random.default_rng(options.seed)
    count = min(options.reference_pairs, len(train))
    reference_rows = sorted(rng.choice(len(train), size=count, replace=False).tolist())
    pad_id = subject.scorer.pad_id
    sweep = measure_manifold(
        subject.scorer,
        subject.control,
        _batches(train, reference_rows, options.batch_size, pad_id),
        _batches(evaluated, curve.pair_index, options.batch_size, pad_id),
        grid,
        layers,
        positions=subject.positions,
        reduction=curve.reduction,
        levels=options.levels,
        k=options.k,
        reference_size=options.reference_size,
        seed=options.seed,
        utility_level=options.utility_level,
        max_rows=options.max_rows,
        progress=progress,
    )
    form, objective = subject.form, subject.objective
    metadata = {"form": form, "objective": objective, "layer": curve.layer, "model": curve.model}
    measured = curve_from_losses(sweep.losses, split=curve.split, **metadata)
    train_curve = curve_from_losses(sweep.reference_losses, split="train", **metadata)
    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    for layer, measures in sweep.layers.items():
        figures[f"preference plane, layer {layer}"] = plot_preference_plane(measures, out / f"plane-layer{layer}.png")
        figures[f"distance vs m, layer {layer}"] = plot_distance_vs_m(
            measures, measured, out / f"distance-layer{layer}.png"
        )
    first = min(iv.layer for iv in subject.control)
    setup = [
        ("run folder", subject.run),
        ("model", subject.model),
        ("control", f"{form} {objective}, layer {first}, steering {subject.positions} tokens"),
        ("evaluated", f"{len(curve.pair_index)} {curve.split} pairs of {curve_name}"),
        ("grid", _grid_line(grid, curve.multipliers)),
        ("NLL reduction", curve.reduction),
        ("reference", f"{count} of {len(train)} training pairs (seed {options.seed}) at m = 0, both readouts"),
        ("layers", ", ".join(map(str, sweep.layers))),
        ("k-NN", f"k = {options.k}, reference sample ≤ {options.reference_size} activations per layer"),
        ("principal subspaces", ", ".join(f"{level:g}" for level in options.levels) + " of the variance"),
    ]
    report = ManifoldReport(
        setup=setup,
        sweep=sweep,
        curve=measured,
        saved_curve=curve,
        relations={layer: relate(measures, measured) for layer, measures in sweep.layers.items()},
        fits=compare_fits(train_curve, curve if grid == list(curve.multipliers) else measured),
        fitted_split="train",
        test_split=curve.split,
        figures=figures,
    )
    write_markdown(report, out / REPORT_FILE)
    return report


def analyze_run(run_dir: str | Path, options: AnalysisOptions | None = None) -> Path:
    """Measures a run's control against the unsteered manifold and writes ``manifold.md``; returns its path."""
    options = options or AnalysisOptions()
    run_dir = Path(run_dir)
    control_dir = run_dir / CONTROL_DIRNAME
    if not control_dir.is_dir():
        raise RunFolderError(f"{control_dir} not found: the run saved no control (it is written when `fit` ends)")
    if options.out is not None and options.out.exists() and any(options.out.iterdir()):
        raise RunFolderError(f"--out {options.out} is not empty: remove it or choose another folder")
    data_config = _read_config(run_dir)
    curve = _read_curve(run_dir, options.curve)
    try:
        if options.multipliers is not None:
            check_grid(options.multipliers)
    except ValueError as err:
        raise RunFolderError(f"--multipliers: {err}") from err
    steered: SteeredModel = load_steered(
        control_dir, options.backbone, **({"device_map": options.device_map} if options.device_map else {})
    )
    tokenizer = steered.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if options.data_dir is not None:
        data_config = {**data_config, "data_dir": options.data_dir}
    data = PolarityDataModule(**{key: value for key, value in data_config.items() if key != "tokenizer"})
    data.set_tokenizer(tokenizer)
    data.setup()
    evaluated = _split_items(data, curve.split, options.curve or run_dir / DEFAULT_CURVE)
    assert curve.pair_index is not None
    if max(curve.pair_index) >= len(evaluated):
        raise RunFolderError(
            f"the curve lists pair {max(curve.pair_index)} but the {curve.split} split rebuilt from config.yaml has "
            f"{len(evaluated)} pairs: the data changed since the run"
        )
    try:
        layers = measured_layers(steered.layout, steered.control, options.layers)
    except ValueError as err:
        raise RunFolderError(f"--layers: {err}") from err
    subject = AnalysedControl(
        scorer=PairScorer(steered.model, steered.layout, pad_id=pad_id),
        control=steered.control,
        positions=steered.positions,  # type: ignore[arg-type]
        form=curve.form or steered.metadata["form"],
        objective=curve.objective or steered.metadata.get("objective"),
        model=curve.model or steered.metadata.get("backbone"),
        run=str(run_dir),
    )
    out = options.out or fresh_folder(run_dir / "manifold")
    curve_name = str(options.curve or DEFAULT_CURVE)
    analyze_control(subject, data.tokenized("train"), evaluated, curve, curve_name, layers, options, out)
    return out / REPORT_FILE
