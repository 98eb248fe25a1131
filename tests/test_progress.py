"""Progress totals (resumed runs, ``max_steps``, accumulation) and the throttled progress line."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from lightning_split.progress import ProgressLog, SteeringRichProgressBar, format_seconds, train_batches_total


def _trainer(batches: int, max_steps: int = -1, accumulate: int = 1) -> SimpleNamespace:
    return SimpleNamespace(num_training_batches=batches, max_steps=max_steps, accumulate_grad_batches=accumulate)


@pytest.mark.parametrize(
    ("trainer", "first_batch", "global_step", "total"),
    [
        (_trainer(10), 0, 0, 10),  # no step limit: the epoch's batches
        (_trainer(10), 8, 8, 10),  # resumed at batch 8: still out of 10
        # max_steps 13, resumed at batch 8 / step 8: Lightning's bar read 9/5 (13 - 8 steps left)
        (_trainer(10, max_steps=13), 8, 8, 10),
        (_trainer(10, max_steps=11), 8, 8, 10),  # 3 steps left from batch 8: the epoch's 10 batches
        (_trainer(10, max_steps=10), 0, 5, 5),  # a fresh epoch with 5 steps left
        (_trainer(10, max_steps=3, accumulate=2), 0, 0, 6),  # 3 steps of 2 batches, not 3 batches
        (_trainer(10, max_steps=4, accumulate=2), 0, 4, 0),  # the limit is reached
    ],
)
def test_train_batches_total(trainer, first_batch, global_step, total):
    assert train_batches_total(trainer, first_batch, global_step) == total


def test_progress_log_prints_first_then_every_interval_then_last(monkeypatch):
    clock = iter([0.0, 0.0, 1.0, 5.0, 11.0, 12.0, 13.0, 13.0])
    monkeypatch.setattr("lightning_split.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    log = ProgressLog("[predict] batch", 20, interval=10.0, stream=out)  # t0 = 0
    with log as advance:  # prints 0/20 at t = 0
        advance(2)  # t = 1: too soon
        advance(2)  # t = 5: too soon
        advance(4)  # t = 11: prints 8/20
        advance(2)  # t = 12: too soon
    # leaving prints the last count (t = 13)
    lines = out.getvalue().splitlines()
    assert lines == [
        "[predict] batch 0/20 (0%) · 0 batch/s · 0:00 elapsed · ? left",
        "[predict] batch 8/20 (40%) · 0.727 batch/s · 0:11 elapsed · 0:16 left",
        "[predict] batch 10/20 (50%) · 0.769 batch/s · 0:13 elapsed · 0:13 left",
    ]


def test_progress_log_without_total_and_resumed_start():
    out = io.StringIO()
    ProgressLog("multiplier sweep", None, stream=out).update(3, force=True)
    assert out.getvalue().startswith("multiplier sweep 3 · ") and " left" not in out.getvalue()
    resumed = ProgressLog("[fit] batch", 5, stream=io.StringIO(), start=3)
    assert resumed.line(now=resumed._t0 + 10).startswith("[fit] batch 3/5 (60%) · 0 batch/s · 0:10 elapsed · ? left")


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 59.6, 61, 3600 + 62, float("inf"), -1)] == [
        "0:00", "1:00", "1:01", "1:01:02", "?", "?"
    ]  # fmt: skip


@pytest.mark.parametrize(("max_epochs", "description"), [(-1, "Epoch 3"), (None, "Epoch 3"), (5, "Epoch 3/4")])
def test_rich_bar_epoch_description_without_epoch_limit(max_epochs, description):
    bar = SteeringRichProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs)  # Lightning read "Epoch 3/-2" for max_epochs=-1
    assert bar._get_train_description(3).rstrip() == description
