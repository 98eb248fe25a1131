"""The manifold analysis of the tested control, written into the run folder and logged to W&B.

:class:`ManifoldAnalysisCallback` runs, at the end of ``trainer.test``, the analysis of ``lightning-split analyze``
(:func:`lightning_split.manifold.run_folder.analyze_control`) on the module's control in memory: the pairs and
grid of the test sweep that the run's :class:`~lightning_split.callbacks.TradeoffCurveCallback` has just made,
measured against the unsteered activations of a seeded sample of the data module's training pairs. It writes
``manifold.md`` and its PNG figures into ``<trainer.log_dir>/manifold/`` (``manifold-2``, ``manifold-3``… when
that folder exists: another analysis of the run is never overwritten), logs Spearman's ρ of every measure with
the utility drop to every logger and, for a ``WandbLogger``, the report's tables
(:mod:`lightning_split.manifold.tables`) as ``wandb.Table``s and its figures as ``wandb.Image``s.

The module is read through :class:`~lightning_split.contracts.SweepTarget`, the pairs through the data module's
``tokenized(split)`` (:class:`~lightning_split.data.PolarityDataModule` has it); both, and the trade-off
callback, are checked when the trainer sets up, the layers when testing starts. With DDP rank 0 alone
measures, after the trade-off sweep gathered every rank's pairs; the other ranks go on to the next collective
and wait there (within the process group's timeout).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from lightning_split.analysis import TradeoffCurve
from lightning_split.contracts import require_sweep_target
from lightning_split.errors import OptionError
from lightning_split.files import fresh_folder
from lightning_split.manifold.report import ManifoldReport
from lightning_split.manifold.run_folder import (
    REPORT_FILE,
    AnalysedControl,
    AnalysisOptions,
    analyze_control,
    measured_layers,
)
from lightning_split.manifold.tables import ReportTable, distance_table, fit_table, relation_table

from .tradeoff import TradeoffCurveCallback

log = logging.getLogger(__name__)

NAME = "ManifoldAnalysisCallback"


def report_tables(report: ManifoldReport) -> dict[str, ReportTable]:
    """The tables the callback logs: ``distances`` (every layer and m), ``relations`` (ρ and R² per layer and
    measure) and ``fits`` (the curve fits beside the baselines)."""
    return {"distances": distance_table(report), "relations": relation_table(report), "fits": fit_table(report)}


def loggable(table: ReportTable) -> ReportTable:
    """``table`` with one type per column, as a ``wandb.Table`` needs: in a column of numbers, a sentence (why a
    value could not be computed) or NaN becomes ``None``; the sentences go to a last ``notes`` column."""
    numeric = [any(isinstance(row[i], (int, float)) for row in table.rows) for i in range(len(table.columns))]
    rows = []
    for row in table.rows:
        notes, cells = [], []
        for name, value, number in zip(table.columns, row, numeric):
            if number and isinstance(value, str):
                notes.append(f"{name}: {value}")
                value = None
            elif isinstance(value, float) and math.isnan(value):
                value = None
            cells.append(value)
        rows.append([*cells, "; ".join(notes)])
    return ReportTable([*table.columns, "notes"], rows)


def spearman_scalars(report: ManifoldReport) -> dict[str, float]:
    """``manifold/layer<L>/spearman_<measure>``: Spearman's ρ of each measure's mean with the utility drop over the
    grid (the measures where it is defined)."""
    return {
        f"manifold/layer{rel.layer}/spearman_{rel.measure}": rel.spearman
        for relations in report.relations.values()
        for rel in relations
        if isinstance(rel.spearman, float)
    }


class ManifoldAnalysisCallback(Callback):
    """Measures the tested control against the unsteered activation manifold; writes and logs the report.

    The settings are those of ``lightning-split analyze`` (:class:`~lightning_split.manifold.AnalysisOptions`);
    the pairs and grid are those of the trade-off callback's test sweep (its ``multipliers`` and ``max_pairs``).

    Args:
        layers: blocks measured (``None``: the control's layer, the middle of the blocks above it, the last).
        levels: explained-variance levels of the principal subspaces.
        k: neighbours of the k-NN distance.
        reference_pairs: training pairs (a seeded sample) that define the unsteered reference.
        reference_size: activations per layer kept for the k-NN reference.
        seed: seed of both samples.
        utility_level: explained share of the utility-relevant subspace (``None``: not measured).
        batch_size: pairs per batch of the measuring passes.
        max_rows: packed rows per upper-block pass.
        output_dir: where the report folder goes (``None``: ``<trainer.log_dir>/manifold``); an existing folder
            is kept and ``<output_dir>-2`` (``-3``…) used instead.
        progress: show the measuring passes' progress.

    Attributes:
        last_report: the last ``manifold.md`` written (rank 0), or ``None``.
        last_tables: the tables of that report (:func:`report_tables`), or ``None``.
        reports: every ``manifold.md`` written, in order.
    """

    def __init__(
        self,
        layers: list[int] | None = None,
        levels: Sequence[float] = AnalysisOptions.levels,
        k: int = AnalysisOptions.k,
        reference_pairs: int = AnalysisOptions.reference_pairs,
        reference_size: int = AnalysisOptions.reference_size,
        seed: int = AnalysisOptions.seed,
        utility_level: float | None = AnalysisOptions.utility_level,
        batch_size: int = AnalysisOptions.batch_size,
        max_rows: int = AnalysisOptions.max_rows,
        output_dir: str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        try:
            self.options = AnalysisOptions(
                layers=layers,
                levels=tuple(levels),
                k=k,
                reference_pairs=reference_pairs,
                reference_size=reference_size,
                seed=seed,
                utility_level=utility_level,
                batch_size=batch_size,
                max_rows=max_rows,
            )
        except OptionError as err:
            raise OptionError(f"{NAME}: {err}") from err
        self.output_dir = output_dir
        self.progress = progress
        self.last_report: Path | None = None
        self.last_tables: dict[str, ReportTable] | None = None
        self.reports: list[Path] = []
        self._layers: list[int] = []
        self._curve_before: TradeoffCurve | None = None

    def outputs(self) -> dict[str, Path]:
        """The last report (``manifold report``); empty before the first one (and on ranks > 0)."""
        return {} if self.last_report is None else {"manifold report": self.last_report}

    # ----------------------------------------------------------------- checks
    @staticmethod
    def tradeoff(trainer: L.Trainer) -> TradeoffCurveCallback:
        """The trainer's trade-off callback that sweeps the test pairs.

        Raises:
            OptionError: there is none.
        """
        for callback in trainer.callbacks:
            if isinstance(callback, TradeoffCurveCallback) and callback.on_test:
                return callback
        raise OptionError(
            f"{NAME} measures the pairs and grid of the test trade-off sweep, but the trainer has no "
            "TradeoffCurveCallback with on_test=True: add one to the callbacks (`lightning-split` runs have one; "
            "leave tradeoff.on_test true)"
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuses, before any step runs, a module that is not a
        :class:`~lightning_split.contracts.SweepTarget`, a data module without ``tokenized(split)``, and a trainer
        without a test trade-off sweep."""
        require_sweep_target(pl_module, NAME)
        datamodule = getattr(trainer, "datamodule", None)
        if not callable(getattr(datamodule, "tokenized", None)):
            raise OptionError(
                f"{NAME} reads the pairs from the data module's tokenized(split), but the trainer has "
                f"{type(datamodule).__name__ if datamodule is not None else 'no data module'}: pass a "
                "lightning_split.data.PolarityDataModule as datamodule"
            )
        self.tradeoff(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Checks the layers against the loaded control (before any test step) and notes the trade-off callback's
        curve, so that a curve of an earlier run is never taken for this one's."""
        spec = require_sweep_target(pl_module, NAME).sweep_spec()
        try:
            self._layers = measured_layers(spec.scorer.layout, spec.control, self.options.layers)
        except ValueError as err:
            raise OptionError(f"{NAME} layers: {err}") from err
        self._curve_before = self.tradeoff(trainer).last_curve

    # ----------------------------------------------------------------- work
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """On rank 0: measures the test sweep's pairs, writes the report and logs it."""
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        tradeoff = self.tradeoff(trainer)
        curve, written = tradeoff.last_curve, tradeoff.last_report
        if curve is None or curve is self._curve_before or written is None:
            log.warning("%s: the trade-off callback made no test sweep in this run; no manifold analysis", NAME)
            return
        target = require_sweep_target(pl_module, NAME)
        spec, run = target.sweep_spec(), target.describe()
        subject = AnalysedControl(
            spec.scorer, spec.control, spec.positions, run.form, run.objective, run.model, str(run_dir)
        )
        curve_file = written["curve_json"]
        curve_name = str(curve_file.relative_to(run_dir) if curve_file.is_relative_to(run_dir) else curve_file)
        out = fresh_folder(Path(self.output_dir) if self.output_dir is not None else run_dir / "manifold")
        datamodule: Any = trainer.datamodule
        with torch.inference_mode(False):  # the test loop's inference mode would forbid the utility gradients
            report = analyze_control(
                subject,
                datamodule.tokenized("train"),
                datamodule.tokenized("test"),  # the split of the test sweep
                curve,
                curve_name,
                self._layers,
                self.options,
                out,
                progress=self.progress,
            )
        self.last_report, self.last_tables = out / REPORT_FILE, report_tables(report)
        self.reports.append(self.last_report)
        log.info("%s: wrote %s", NAME, self.last_report)
        self._log(trainer, report, self.last_tables)

    def _log(self, trainer: L.Trainer, report: ManifoldReport, tables: dict[str, ReportTable]) -> None:
        scalars = spearman_scalars(report)
        for logger in trainer.loggers:
            if scalars:
                logger.log_metrics(scalars, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                logger.experiment.log(self._wandb_payload(report, tables, trainer.global_step))

    @staticmethod
    def _wandb_payload(report: ManifoldReport, tables: dict[str, ReportTable], step: int) -> dict[str, Any]:
        import wandb

        payload: dict[str, Any] = {}
        for name, table in tables.items():
            typed = loggable(table)
            payload[f"manifold/{name}"] = wandb.Table(columns=typed.columns, data=typed.rows)
        for title, path in report.figures.items():
            payload[f"manifold/{path.stem}"] = wandb.Image(str(path), caption=title)
        payload["trainer/global_step"] = step
        return payload


__all__ = ["ManifoldAnalysisCallback", "loggable", "report_tables", "spearman_scalars"]
