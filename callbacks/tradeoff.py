"""The trade-off curve callback: a multiplier sweep on validation/test pairs, plotted, reported and logged.

:class:`TradeoffCurveCallback` runs :func:`lightning_split.sweep.sweep_losses` over the pairs of the
validation dataloader every N validation epochs (never during the sanity check) and over the test pairs at
the end of testing. It writes the curve as PNG plots, CSV, JSON and ``report.md``
(:func:`lightning_split.analysis.write_report`) into ``<output_dir>/val-epochNNN/`` or
``<output_dir>/test/``, logs scalars to every logger and, for a ``WandbLogger``, W&B line and scatter
charts, the PNGs and a ``wandb.Table`` of the curve.

The module is read only through :class:`~lightning_split.contracts.SweepTarget` (``sweep_spec()`` and
``describe()``); a module without them is refused when the trainer sets up. The written reports are listed by
:meth:`TradeoffCurveCallback.outputs` (:class:`~lightning_split.contracts.HasOutputs`).

With DDP each rank sweeps the pairs of its own shard (the dataloader Lightning prepared, with its
distributed sampler); the per-pair losses are gathered, duplicates added by the sampler's padding are
dropped by pair index, and rank 0 alone builds the curve, writes and logs. The numbers therefore equal a
one-process run over the same pairs. With ``max_pairs`` the ranks first gather every evaluated pair's index
and answer class (no model run), all draw the same seeded subset balanced by answer class, and each sweeps
its share of it.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from lightning_split.analysis import CurveFit, TradeoffCurve, best_multiplier, fit_curve, write_report
from lightning_split.contracts import RunDescription, SweepSpec, require_sweep_target
from lightning_split.data.answers import NO_CLASS, balanced_subset
from lightning_split.data.batch import PairBatch
from lightning_split.grid import check_grid
from lightning_split.sweep import DEFAULT_MAX_ROWS, LowerFn, SweepLosses, curve_from_losses, sweep_losses

log = logging.getLogger(__name__)

DEFAULT_POINTS = 21
"""Points of the default grid, ``-s, -0.9 s, …, 0, …, s`` with ``s`` the largest training multiplier: enough
for the report's fits (at least 2 distinct multipliers per fitted parameter, 18 for preference)."""

Stage = Literal["val", "test"]


def default_grid(training_multipliers: Sequence[float] | None, points: int = DEFAULT_POINTS) -> list[float]:
    """A symmetric grid with 0 spanning the training grid: ``points`` values from ``-s`` to ``s``.

    Args:
        training_multipliers: the module's training grid (``s`` is its largest ``|m|``; 2.0 if empty).
        points: an odd number of points (so that 0 is on the grid).
    """
    if points < 3 or points % 2 == 0:
        raise ValueError(f"points must be odd and >= 3, got {points}")
    scale = max((abs(float(m)) for m in training_multipliers or ()), default=2.0) or 2.0
    half = points // 2
    return [round(scale * k / half, 6) for k in range(-half, half + 1)]


def pair_ids(batches: Iterable[PairBatch]) -> torch.Tensor:
    """``[2, N]`` long: the pairs' split indices and answer class ids (``NO_CLASS``: none), read from the batches
    without running the model."""
    parts = [
        torch.stack(
            [b.index.cpu(), b.answer_class.cpu() if b.answer_class is not None else torch.full_like(b.index, NO_CLASS)]
        )
        for b in batches
    ]
    return torch.cat(parts, dim=1).to(torch.long) if parts else torch.zeros(2, 0, dtype=torch.long)


def only(batches: Iterable[PairBatch], chosen: set[int]) -> Iterator[PairBatch]:
    """Yields the pairs of ``batches`` whose index is in ``chosen`` (batches left empty are skipped)."""
    for batch in batches:
        keep = torch.tensor([int(i) in chosen for i in batch.index.tolist()], dtype=torch.bool)
        if bool(keep.any()):
            yield batch.select(keep.to(batch.index.device))


def dedupe(losses: SweepLosses) -> SweepLosses:
    """Keeps one copy of each pair index, sorted by index."""
    _, first = np.unique(losses.index.numpy(), return_index=True)
    return losses.select(torch.as_tensor(first, dtype=torch.long))


def gather_columns(pl_module: L.LightningModule, stacked: torch.Tensor) -> torch.Tensor:
    """Concatenates every rank's ``[R, n_rank]`` float64 columns along dim 1 (one ``all_gather``; ranks may
    hold different counts). Integers below 2**53 travel exactly."""
    if pl_module.trainer.world_size <= 1:
        return stacked
    device = pl_module.device
    counts = pl_module.all_gather(torch.tensor([stacked.shape[1]], device=device)).view(-1).tolist()
    padded = torch.zeros(stacked.shape[0], max(counts), dtype=torch.float64)
    padded[:, : stacked.shape[1]] = stacked
    gathered = pl_module.all_gather(padded.to(device)).cpu()
    return torch.cat([gathered[rank, :, :count] for rank, count in enumerate(counts)], dim=1)


def gather_losses(pl_module: L.LightningModule, losses: SweepLosses) -> SweepLosses:
    """Concatenates every rank's per-pair losses, indices and answer classes."""
    rows = len(losses.multipliers)
    ids = torch.stack([losses.index, losses.answer_class]).to(torch.float64)
    merged = gather_columns(pl_module, torch.cat([losses.l_pos, losses.l_neg, ids]))
    return SweepLosses(
        losses.multipliers,
        merged[:rows].clone(),
        merged[rows : 2 * rows].clone(),
        merged[2 * rows].round().to(torch.long),
        losses.reduction,
        merged[2 * rows + 1].round().to(torch.long),
    )


def _first_batches(loader: Iterable[PairBatch], num_batches: Sequence[int | float]) -> Iterable[PairBatch]:
    """``loader`` cut to the trainer's batch count for it (``num_batches[0]``), when that is finite."""
    if num_batches and math.isfinite(num_batches[0]):
        return itertools.islice(loader, int(num_batches[0]))
    return loader


def _first_loader(loaders: Any) -> Any:
    """The first dataloader when Lightning holds several (a list/tuple/dict of them)."""
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    return loaders


class TradeoffCurveCallback(Callback):
    """Sweeps the control's multiplier on validation and test pairs and reports the trade-off curve.

    Args:
        multipliers: the sweep grid; must contain 0 (:func:`~lightning_split.grid.check_grid`). ``None``: 21
            points from ``-s`` to ``s`` with ``s`` the largest multiplier of the module's training grid
            (``sweep_spec().training_multipliers``), e.g.
            ``-2, -1.8, …, 2`` for the default grid ``{0.2, …, 2.0}``.
        every_n_val_epochs: sweep after every N-th validation epoch (0: never during fit).
        max_pairs: sweep at most this many of the pairs the trainer evaluates (``limit_val_batches`` /
            ``limit_test_batches`` apply to the sweep too): a subset drawn with ``seed``, balanced by answer
            class when the answers form classes (:func:`~lightning_split.data.answers.balanced_subset`), and
            recorded in the report and ``curve.json`` (``pair_index``, ``sampling``). ``None``: every pair.
        max_utility_drop: utility budget (log-odds) of the selected multiplier
            (:func:`~lightning_split.analysis.best_multiplier`).
        signs: multipliers the selection considers: ``positive`` or ``both``.
        on_test: also sweep the test pairs at the end of ``trainer.test``.
        output_dir: where the reports go (``None``: ``<trainer.log_dir>/tradeoff``).
        max_rows: packed rows (pairs × multipliers) per upper-block pass of the sweep.
        progress: show the sweep's own ``rich`` progress bar (off by default; Lightning has its bar).
        use_lower_cache: reuse the module's lower-block states (``sweep_spec().lower``, filled by
            validation/test steps).
        seed: seed of the ``max_pairs`` subset.

    Attributes:
        last_report: paths of the last report written (keys of
            :func:`~lightning_split.analysis.write_report` plus ``"dir"``), or ``None``.
        last_curve: the last curve (on rank 0), or ``None``.
        reports: report paths of every sweep, keyed by its folder name (``val-epoch003``, ``test``).
    """

    def __init__(
        self,
        multipliers: list[float] | None = None,
        every_n_val_epochs: int = 1,
        max_pairs: int | None = None,
        max_utility_drop: float = 1.0,
        signs: Literal["positive", "both"] = "positive",
        on_test: bool = True,
        output_dir: str | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        progress: bool = False,
        use_lower_cache: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if multipliers is not None:
            multipliers = check_grid(multipliers)
        if every_n_val_epochs < 0:
            raise ValueError(f"every_n_val_epochs must be >= 0, got {every_n_val_epochs}")
        if max_pairs is not None and max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1 or None, got {max_pairs}")
        if not max_utility_drop >= 0:
            raise ValueError(f"max_utility_drop must be >= 0, got {max_utility_drop}")
        self.multipliers = multipliers
        self.every_n_val_epochs = every_n_val_epochs
        self.max_pairs = max_pairs
        self.seed = seed
        self.max_utility_drop = float(max_utility_drop)
        self.signs = signs
        self.on_test = on_test
        self.output_dir = output_dir
        self.max_rows = max_rows
        self.progress = progress
        self.use_lower_cache = use_lower_cache
        self.last_report: dict[str, Path] | None = None
        self.last_curve: TradeoffCurve | None = None
        self.reports: dict[str, dict[str, Path]] = {}
        self._val_epochs = 0

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Counts of validation epochs seen (so ``every_n_val_epochs`` survives a resume)."""
        return {"val_epochs": self._val_epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        self._val_epochs = int(state_dict.get("val_epochs", 0))

    def grid(self, spec: SweepSpec) -> list[float]:
        """The sweep grid (the given one, or the default built from the module's training grid)."""
        if self.multipliers is not None:
            return list(self.multipliers)
        return default_grid(spec.training_multipliers)

    def outputs(self) -> dict[str, Path]:
        """The last report's folder (``trade-off report``) and files (keys of
        :func:`~lightning_split.analysis.write_report`); empty before the first report (and on ranks > 0)."""
        if self.last_report is None:
            return {}
        return {
            "trade-off report": self.last_report["dir"],
            **{k: v for k, v in self.last_report.items() if k != "dir"},
        }

    # ----------------------------------------------------------------- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuses, before any step runs, a module that does not satisfy
        :class:`~lightning_split.contracts.SweepTarget`."""
        require_sweep_target(pl_module, type(self).__name__)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if trainer.sanity_checking or self.every_n_val_epochs == 0:
            return
        self._val_epochs += 1
        if self._val_epochs % self.every_n_val_epochs:
            return
        tag = f"val-epoch{trainer.current_epoch:03d}"
        if tag in self.reports:  # several validations in one epoch (val_check_interval < 1)
            tag = f"{tag}-step{trainer.global_step:07d}"
        self.run(trainer, pl_module, "val", _first_loader(trainer.val_dataloaders), tag, trainer.num_val_batches)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if self.on_test:
            loader = _first_loader(trainer.test_dataloaders)
            self.run(trainer, pl_module, "test", loader, "test", trainer.num_test_batches)

    # ----------------------------------------------------------------- work
    def run(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: Stage,
        loader: Iterable[PairBatch] | None,
        tag: str,
        num_batches: Sequence[int | float] = (),
    ) -> dict[str, Path] | None:
        """Sweeps ``loader``'s pairs (this rank's shard), gathers them, and on rank 0 writes and logs.

        Every rank must call this (it gathers). ``num_batches``: the trainer's batch counts per loader (the
        first one bounds the sweep, as ``limit_*_batches`` bounds evaluation). Returns the report paths on
        rank 0, else ``None``.
        """
        target = require_sweep_target(pl_module, type(self).__name__)
        if loader is None:
            log.warning("TradeoffCurveCallback: no %s dataloader; skipping the sweep", stage)
            return None
        spec = target.sweep_spec()
        out_dir = self._root(trainer) / tag  # trainer.log_dir broadcasts: called on every rank
        batches: Iterable[PairBatch] = _first_batches(loader, num_batches)
        sampling: dict[str, Any] = {}
        if self.max_pairs is not None:
            ids = gather_columns(pl_module, pair_ids(batches).to(torch.float64)).round().to(torch.long)
            evaluated = len(set(ids[0].tolist()))
            chosen = set(balanced_subset(ids[0].tolist(), ids[1].tolist(), self.max_pairs, self.seed))
            batches = _first_batches(loader, num_batches)
            if len(chosen) < evaluated:
                batches = only(batches, chosen)
                sampling = {"evaluated": evaluated, "max_pairs": self.max_pairs, "seed": self.seed}
        lower: LowerFn | None = spec.lower if self.use_lower_cache else None
        losses = sweep_losses(
            spec.scorer,
            spec.control,
            list(batches),  # token ids only (small); a list has a length, so the progress shows totals and time left
            self.grid(spec),
            positions=spec.positions,
            reduction=spec.reduction,
            progress=self.progress and trainer.is_global_zero,
            device=pl_module.device,
            max_rows=self.max_rows,
            lower=lower,
        )
        losses = dedupe(gather_losses(pl_module, losses))
        if not trainer.is_global_zero:
            return None
        metadata = self._metadata(trainer, target.describe(), spec, stage)
        curve = curve_from_losses(losses, sampling=sampling, class_names=list(spec.answer_classes), **metadata)
        fits = fit_curve(curve)
        paths = write_report(curve, out_dir, self.max_utility_drop, self.signs, fits)
        paths = {"dir": out_dir, **paths}
        self.last_curve, self.last_report = curve, paths
        self.reports[tag] = paths
        self._log(trainer, curve, stage, paths, fits)
        return paths

    def _root(self, trainer: L.Trainer) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "tradeoff"

    @staticmethod
    def _metadata(trainer: L.Trainer, run: RunDescription, spec: SweepSpec, stage: Stage) -> dict[str, Any]:
        """The curve's metadata: the module's description, where the sweep ran, and the steered tokens."""
        layers = list(run.layers)
        extra: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "positions": spec.positions,
            "processes": max(trainer.world_size, 1),
        }
        if len(layers) > 1:
            extra["layers"] = layers
        return {
            "split": "validation" if stage == "val" else "test",
            "form": run.form,
            "objective": run.objective,
            "layer": layers[0] if len(layers) == 1 else None,
            "model": run.model,
            "extra": extra,
        }

    # ----------------------------------------------------------------- logging
    def scalars(
        self, curve: TradeoffCurve, stage: Stage, fits: dict[str, CurveFit | str] | None = None
    ) -> dict[str, float]:
        """The scalars logged for a curve: the selection under the utility budget (its preference and utility
        as the rule compares them, and the clamped count at the chosen m), the pairs swept and evaluated, every
        grid value (with answer classes also ``balanced_accuracy`` and ``accuracy[<class>]`` /
        ``preference[<class>]``), and the R² of the fits (``fits``, from :func:`fit_curve`) that were made."""
        selection = best_multiplier(curve, self.max_utility_drop, self.signs)
        prefix = f"tradeoff/{stage}"
        out = {
            f"{prefix}/selected_m": selection.multiplier,
            f"{prefix}/selected_preference": selection.preference,
            f"{prefix}/selected_utility": selection.utility,
            f"{prefix}/selected_utility_drop": selection.utility_drop,
            f"{prefix}/selected_clamped": float(selection.clamped),
            f"{prefix}/baseline_preference": selection.baseline_preference,
            f"{prefix}/baseline_utility": selection.baseline_utility,
            f"{prefix}/max_preference": max(curve.preference),
            f"{prefix}/clamped_total": float(sum(curve.clamped)),
            f"{prefix}/n_pairs": float(curve.n_pairs[0]),
            f"{prefix}/n_pairs_evaluated": float(curve.sampling.get("evaluated", curve.n_pairs[0])),
        }
        columns = [c for c in curve.columns() if c not in ("multiplier", "clamped", "n_pairs", "anti_steerable")]
        for row in curve.rows():
            m = f"{row['multiplier']:g}"
            for column in columns:
                out[f"{prefix}/{column}@m={m}"] = float(row[column])  # type: ignore[arg-type]
            if row["anti_steerable"] is not None:
                out[f"{prefix}/anti_steerable@m={m}"] = float(row["anti_steerable"])
        for kind, fit in (fits or {}).items():
            if isinstance(fit, CurveFit):
                out[f"{prefix}/fit_r2_{kind}"] = fit.r2
        return out

    def _log(
        self,
        trainer: L.Trainer,
        curve: TradeoffCurve,
        stage: Stage,
        paths: dict[str, Path],
        fits: dict[str, CurveFit | str],
    ) -> None:
        scalars = self.scalars(curve, stage, fits)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
            if _is_wandb(logger):
                logger.experiment.log(self._wandb_payload(curve, stage, paths, trainer.global_step))

    def _wandb_payload(self, curve: TradeoffCurve, stage: Stage, paths: dict[str, Path], step: int) -> dict[str, Any]:
        import wandb

        prefix = f"tradeoff/{stage}"
        columns = curve.columns()
        table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in curve.rows()])
        where = f"{stage}, {curve.form} {curve.objective}, epoch {curve.extra.get('epoch')}"
        payload: dict[str, Any] = {
            f"{prefix}/curve": table,
            f"{prefix}/preference_vs_m": wandb.plot.line(
                table, "multiplier", "preference", title=f"preference log-odds vs m ({where})"
            ),
            f"{prefix}/utility_vs_m": wandb.plot.line(
                table, "multiplier", "utility", title=f"utility log-odds vs m ({where})"
            ),
            f"{prefix}/preference_vs_utility": wandb.plot.scatter(
                table, "utility", "preference", title=f"preference vs utility log-odds ({where})"
            ),
            "trainer/global_step": step,
        }
        for key in ("preference_png", "utility_png", "tradeoff_png"):
            if key in paths:
                payload[f"{prefix}/{key.removesuffix('_png')}_plot"] = wandb.Image(str(paths[key]))
        return payload


def _is_wandb(logger: Any) -> bool:
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:  # pragma: no cover - wandb logger unavailable
        return False
    return isinstance(logger, WandbLogger)


__all__ = [
    "DEFAULT_POINTS",
    "TradeoffCurveCallback",
    "default_grid",
    "dedupe",
    "gather_columns",
    "gather_losses",
    "only",
    "pair_ids",
]
