"""Stops a run cleanly on SIGTERM (a cluster scheduler's notice), leaving a checkpoint to resume from.

Lightning alone logs ``Received SIGTERM``, stops at the end of the current batch (even in the middle of a
gradient accumulation) and exits with status 0 without saving anything: the work since the last periodic
checkpoint is lost and a ``fit && predict`` script carries on as if training had finished.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

SIGTERM_EXIT_CODE = 128 + int(signal.SIGTERM)
"""Exit status of a run stopped by SIGTERM (143, what a shell reports for a process killed by it)."""


class StoppedBySigterm(SystemExit):
    """Raised to end a run stopped by SIGTERM; its exit status is :data:`SIGTERM_EXIT_CODE`."""

    def __init__(self) -> None:
        super().__init__(SIGTERM_EXIT_CODE)


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where the stop checkpoint goes: ``last.ckpt`` in the first ``ModelCheckpoint``'s folder (what
    ``--ckpt_path last`` finds), else in ``trainer.default_root_dir``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "last.ckpt"


class StopOnSigterm(Callback):
    """On SIGTERM, stops at the next safe point and exits with status 143.

    While a stage runs, this callback (added by ``lightning-split`` to every run) handles SIGTERM itself
    instead of Lightning. In ``fit`` it stops after the next optimizer step (never inside a gradient
    accumulation), saves ``last.ckpt`` (:func:`last_checkpoint_path`) with the loop and data-loader position, and
    exits: ``--ckpt_path last`` continues exactly where it stopped. Validation, test and predict stop after
    the current batch. A validation pass or trade-off sweep under way inside ``fit`` finishes first. Under
    DDP rank 0 passes the signal on and the ranks agree on the step to stop at (one all-reduce per
    optimizer step).
    """

    def __init__(self) -> None:
        super().__init__()
        self.requested = False
        self.checkpoint: Path | None = None
        self._trainer: L.Trainer | None = None
        self._step_before = 0

    # ----------------------------------------------------------------- the handler
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            print("received SIGTERM: stopping after the current step", file=sys.stderr, flush=True)
            launcher = self._trainer.strategy.launcher if self._trainer is not None else None
            if launcher is not None:  # DDP started from this process: pass it on to the other ranks
                launcher.kill(signum)
        self.requested = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:  # noqa: D102
        self._trainer = trainer

    def _install(self) -> None:
        # Lightning installs its SIGTERM handler after `setup` and restores the previous one when the stage
        # ends; ours replaces it while the loops run
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._install()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._install()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._install()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._install()

    # ----------------------------------------------------------------- stopping
    def _agreed(self, trainer: L.Trainer) -> bool:
        """Whether any rank received SIGTERM (every rank must call this at the same point)."""
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(self.requested, all=False))
        return self.requested

    def on_train_batch_start(  # noqa: D102
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(  # noqa: D102
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self._step_before or not self._agreed(trainer):
            return  # inside a gradient accumulation, or no SIGTERM
        # the same point in the loop as ModelCheckpoint(every_n_train_steps=...), so a resume is exact
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self.checkpoint = path
        if trainer.is_global_zero:
            print(
                f"stopped by SIGTERM after step {trainer.global_step} (epoch {trainer.current_epoch}); saved {path}\n"
                "  resume: the same command with --ckpt_path last",
                file=sys.stderr,
                flush=True,
            )
        raise StoppedBySigterm()

    def _stop_evaluation(self, trainer: L.Trainer) -> None:
        # inside fit, stop at the next optimizer step; evaluation shards may differ in length under DDP, so
        # each rank stops on its own signal (passed on by rank 0) without a collective
        if trainer.state.fn == "fit" or not self.requested:
            return
        if trainer.is_global_zero:
            print(f"stopped by SIGTERM during {trainer.state.fn}", file=sys.stderr, flush=True)
        raise StoppedBySigterm()

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self._stop_evaluation(trainer)

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self._stop_evaluation(trainer)

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self._stop_evaluation(trainer)


__all__ = ["SIGTERM_EXIT_CODE", "StopOnSigterm", "StoppedBySigterm", "last_checkpoint_path"]
