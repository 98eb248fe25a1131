"""Progress for every stage: plain log lines when output is not a terminal, a rich bar with right totals when it is.

Lightning's bars redraw in place, so in a log file or a pipe they show up only once a stage has finished
(a 38-minute ``predict`` printed nothing for 37 minutes). :class:`LogProgressBar` prints one line per stage
start, then one every ``interval`` seconds and one at the end, with counts, rate, elapsed and remaining time;
``lightning-split`` picks it automatically when stdout is not a TTY (:func:`progress_bar_for`).
:class:`ProgressLog` is the same throttled line for loops outside Lightning (the multiplier sweep).

Both bars count a training epoch's batches with :func:`train_batches_total`: Lightning's own total is
``max_steps - global_step`` when ``max_steps`` is set, which counts optimizer steps instead of batches and
forgets the batches a resumed epoch already did (a resumed run's bar read ``Epoch 0/-2 … 8/5``).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks.progress import ProgressBar, RichProgressBar

DEFAULT_INTERVAL = 30.0
"""Seconds between two progress lines of the same stage."""


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour); ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    hours, rest = divmod(s, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def train_batches_total(trainer: L.Trainer, first_batch: int, global_step: int) -> int | float:
    """Batches of the current training epoch, counted from its first batch (also when resumed mid-epoch).

    Args:
        trainer: the trainer.
        first_batch: index of the first batch this process runs in the epoch (> 0 after a mid-epoch resume).
        global_step: the optimizer step count before that batch.
    """
    total = trainer.num_training_batches
    if trainer.max_steps is not None and trainer.max_steps >= 0:
        steps_left = max(trainer.max_steps - global_step, 0)
        total = min(total, first_batch + steps_left * trainer.accumulate_grad_batches)
    return total


class ProgressLog:
    """A progress line every ``interval`` seconds: ``<label> 12/38 (32%) · 0.5/s · 0:24 elapsed · 0:52 left``.

    Use as a context manager that returns :meth:`advance`, or call :meth:`update` with the count done.
    The first call prints at once; the end prints a last line when something was counted.

    Args:
        label: what is counted (``[predict]``, ``multiplier sweep``).
        total: the count at the end (``None`` or ``inf``: unknown).
        interval: seconds between lines.
        unit: the unit of the rate.
        stream: where lines go (default ``sys.stdout``).
        start: the count already done before this process started (a resumed epoch): it is shown but not
            used for the rate.
    """

    def __init__(
        self,
        label: str,
        total: int | float | None,
        interval: float = DEFAULT_INTERVAL,
        unit: str = "batch",
        stream: TextIO | None = None,
        start: int = 0,
    ) -> None:
        self.label, self.unit, self.interval, self.stream = label, unit, interval, stream
        self.total = total if total is not None and math.isfinite(total) else None
        self.start = self.done = start
        self._t0 = time.monotonic()
        self._last_print: float | None = None
        self._last_done: int | None = None

    def __enter__(self) -> Any:
        self.update(self.done, force=True)
        return self.advance

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def advance(self, n: int = 1) -> None:
        """Counts ``n`` more."""
        self.update(self.done + n)

    def update(self, done: int, suffix: str = "", force: bool = False) -> None:
        """Sets the count done; prints when ``interval`` seconds have passed since the last line (or ``force``)."""
        self.done = done
        now = time.monotonic()
        if force or self._last_print is None or now - self._last_print >= self.interval:
            self._print(now, suffix)

    def finish(self, suffix: str = "") -> None:
        """Prints the last line unless the last one printed already showed this count."""
        if self._last_done != self.done:
            self._print(time.monotonic(), suffix)

    def line(self, now: float | None = None, suffix: str = "") -> str:
        """The progress line for the current count."""
        elapsed = (time.monotonic() if now is None else now) - self._t0
        counted = self.done - self.start
        rate = counted / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label} {self.done}/{self.total}" if self.total is not None else f"{self.label} {self.done}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s" if counted else f"0 {self.unit}/s")
        parts.append(f"{format_seconds(elapsed)} elapsed")
        if self.total is not None:
            left = (self.total - self.done) / rate if rate > 0 else math.inf
            parts.append(f"{format_seconds(left)} left")
        if suffix:
            parts.append(suffix)
        return " · ".join(parts)

    def _print(self, now: float, suffix: str) -> None:
        print(self.line(now, suffix), file=self.stream or sys.stdout, flush=True)
        self._last_print, self._last_done = now, self.done


class _TrainEpochStart:
    """Where the current training epoch started in this process: ``(epoch, first batch, global step)``.

    Lightning calls ``on_train_epoch_start`` only for epochs that start from their first batch, so a
    mid-epoch resume is recognised at its first ``on_train_batch_start``.
    """

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.first_batch, self.global_step = 0, 0

    def epoch_start(self, trainer: L.Trainer) -> None:
        self.epoch, self.first_batch, self.global_step = trainer.current_epoch, 0, trainer.global_step

    def batch_start(self, trainer: L.Trainer, batch_idx: int) -> bool:
        """Records a resumed epoch's first batch; ``True`` when this batch starts a resumed epoch."""
        if self.epoch == trainer.current_epoch:
            return False
        self.epoch, self.first_batch, self.global_step = trainer.current_epoch, batch_idx, trainer.global_step
        return True

    def total(self, trainer: L.Trainer) -> int | float:
        return train_batches_total(trainer, self.first_batch, self.global_step)


def epoch_label(trainer: L.Trainer) -> str:
    """``epoch 2 of 3`` (1-based), or ``epoch 2`` when the run has no epoch limit."""
    epoch = trainer.current_epoch + 1
    max_epochs = trainer.max_epochs
    return f"epoch {epoch} of {max_epochs}" if max_epochs is not None and max_epochs >= 0 else f"epoch {epoch}"


class LogProgressBar(ProgressBar):
    """Progress as log lines (for pipes, files and cluster logs): ``[fit] epoch 1 of 2 · batch 12/40 …``.

    One line when a training epoch, a validation, test or predict pass starts, then one every ``interval``
    seconds, and one when it ends, each with the count, the rate, elapsed and remaining time (and the
    progress-bar metrics during training). Only rank 0 prints.

    Args:
        interval: seconds between two lines of the same pass.
        stream: where lines go (default ``sys.stdout``).
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL, stream: TextIO | None = None) -> None:
        super().__init__()
        if not interval >= 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self.interval, self.stream = interval, stream
        self._enabled = True
        self._epoch = _TrainEpochStart()
        self._train: ProgressLog | None = None
        self._eval: ProgressLog | None = None

    @property
    def is_enabled(self) -> bool:  # noqa: D102
        return self._enabled

    @property
    def is_disabled(self) -> bool:  # noqa: D102
        return not self._enabled

    def disable(self) -> None:  # noqa: D102
        self._enabled = False

    def enable(self) -> None:  # noqa: D102
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        if self._enabled:
            print(*args, file=self.stream or sys.stdout, flush=True, **kwargs)

    def _log(self, label: str, total: int | float, start: int = 0) -> ProgressLog | None:
        if not self._enabled:
            return None
        log = ProgressLog(label, total, self.interval, stream=self.stream, start=start)
        log.update(start, force=True)
        return log

    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        items = self.get_metrics(trainer, pl_module)
        return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    # ----------------------------------------------------------------- training
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._epoch.epoch_start(trainer)
        self._train = self._log(f"[fit] {epoch_label(trainer)} · batch", self._epoch.total(trainer))

    def on_train_batch_start(  # noqa: D102
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._epoch.batch_start(trainer, batch_idx):  # resumed in the middle of this epoch
            label = f"[fit] {epoch_label(trainer)} (resumed) · batch"
            self._train = self._log(label, self._epoch.total(trainer), start=batch_idx)

    def on_train_batch_end(  # noqa: D102
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._train is not None:
            self._train.update(batch_idx + 1, self._metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if self._train is not None:
            self._train.finish(self._metrics(trainer, pl_module))
            self._train = None

    # ----------------------------------------------------------------- evaluation and prediction
    def _eval_start(self, trainer: L.Trainer, name: str, totals: list[int | float]) -> None:
        prefix = f"[fit] {epoch_label(trainer)} · " if trainer.state.fn == "fit" else ""
        self._eval = self._log(f"{prefix}[{name}] batch", sum(totals))

    def _eval_batch_end(self) -> None:
        if self._eval is not None:
            self._eval.advance()

    def _eval_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._eval is not None:
            self._eval.finish(self._metrics(trainer, pl_module))
            self._eval = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        name = "sanity check" if trainer.sanity_checking else "validate"
        self._eval_start(
            trainer, name, trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        )

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self._eval_batch_end()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._eval_end(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._eval_start(trainer, "test", trainer.num_test_batches)

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self._eval_batch_end()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._eval_end(trainer, pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._eval_start(trainer, "predict", trainer.num_predict_batches)

    def on_predict_batch_end(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self._eval_batch_end()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if self._eval is not None:
            self._eval.finish()
            self._eval = None


class SteeringRichProgressBar(RichProgressBar):
    """Lightning's rich bar with the training totals of :func:`train_batches_total` (right after a resume too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = _TrainEpochStart()

    @property
    def total_train_batches(self) -> int | float:  # noqa: D102
        return self._epoch.total(self.trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._epoch.epoch_start(trainer)
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_start(  # noqa: D102
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # a mid-epoch resume skips on_train_epoch_start; the bar is then made at this batch's end
        self._epoch.batch_start(trainer, batch_idx)
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def _get_train_description(self, current_epoch: int) -> str:
        # Lightning writes "Epoch 0/-2" when max_epochs is -1 (no epoch limit)
        max_epochs = self.trainer.max_epochs
        description = f"Epoch {current_epoch}" + (
            f"/{max_epochs - 1}" if max_epochs is not None and max_epochs >= 0 else ""
        )
        return f"{description:{len(self.validation_description)}}"


def progress_bar_for(is_terminal: bool, interval: float = DEFAULT_INTERVAL) -> ProgressBar:
    """The bar ``lightning-split`` adds: rich in a terminal, log lines every ``interval`` seconds otherwise."""
    return SteeringRichProgressBar() if is_terminal else LogProgressBar(interval)


__all__ = [
    "DEFAULT_INTERVAL",
    "LogProgressBar",
    "ProgressLog",
    "SteeringRichProgressBar",
    "format_seconds",
    "progress_bar_for",
    "train_batches_total",
]
