"""The trade-off curve callback in real Lightning runs on a tiny backbone: files, W&B offline run, DDP.

The W&B checks read the offline run back from disk: the ``wandb.Table`` JSON files under
``files/media/table``, the PNGs under ``files/media/images``, and the run's ``.wandb`` record log (parsed
with a small reader of its LevelDB-style log format and the ``wandb_internal_pb2.Record`` protobuf) for the
scalars and the custom-chart (line/scatter) panels.

The DDP test launches this file as a script (``python -m tests.test_tradeoff_callback ...``) with 1 and
with 2 CPU processes (gloo) and compares the curves.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning_split.callbacks import TradeoffCurveCallback, default_grid
from lightning_split.callbacks.tradeoff import dedupe, only, pair_ids

from lightning_split import SteeringModule
from lightning_split.analysis import COLUMNS, CurveFit, TradeoffCurve, fit_curve
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.interventions import VectorOptions
from lightning_split.sweep import SweepLosses
from tests.pair_batches import random_pair_batch

GRID = [-1.0, -0.5, 0.0, 0.5, 1.0]
REPORT_FILES = ("curve.json", "curve.csv", "report.md", "preference.png", "utility.png", "tradeoff.png")
REPO_ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- helpers
def _wandb_records(path: Path) -> Iterator[bytes]:
    """Raw records of a ``.wandb`` file: a 7-byte ``:W&B`` header, then 32 KiB blocks of LevelDB-log
    records (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B record log"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def _wandb_parsed(run_dir: Path) -> list:
    """The run's records, once its last record is the ``exit`` record.

    ``wandb.finish()`` can return before the W&B core process has written the last records of an offline
    run (seen on a busy machine), so the file is read again until it is complete.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + 120
    while True:
        records = []
        for raw in _wandb_records(path):
            record = pb.Record()
            record.ParseFromString(raw)
            records.append(record)
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def _wandb_history_and_charts(run_dir: Path) -> tuple[list[dict[str, str]], dict[str, dict]]:
    """History rows (key -> JSON text) and the custom-chart panels registered in the run's config."""
    history, charts = [], {}
    for record in _wandb_parsed(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
        elif kind == "config":
            for update in record.config.update:
                keys = list(update.nested_key)
                if keys[:2] == ["_wandb", "visualize"]:
                    charts[keys[2]] = json.loads(update.value_json)
    return history, charts


def _csv_multipliers(path: Path) -> list[float]:
    with path.open() as handle:
        return [float(row["multiplier"]) for row in csv.DictReader(handle)]


def _module(backbone_dir: Path, **kwargs) -> SteeringModule:
    return SteeringModule(
        backbone=str(backbone_dir), form=VectorOptions(init_std=0.3), layer=2, training={"lr": 0.05}, **kwargs
    )


# ----------------------------------------------------------------------------- W&B run
def test_callback_writes_reports_and_logs_wandb_offline(
    tiny_backbone_dir, sentiment_like_jsonl, tmp_path, monkeypatch
) -> None:
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    L.seed_everything(0, verbose=False)
    model = _module(tiny_backbone_dir)
    data = PolarityDataModule(dataset=str(sentiment_like_jsonl), batch_size=4, eval_batch_size=2)
    callback = TradeoffCurveCallback(multipliers=GRID, max_utility_drop=0.5)
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="tradeoff-test")
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=logger, callbacks=[callback], enable_checkpointing=False,
        enable_progress_bar=False, num_sanity_val_steps=1, default_root_dir=str(tmp_path),
    )  # fmt: skip
    try:
        trainer.fit(model, data)
        (results,) = trainer.test(model, data)
    finally:
        wandb.finish()

    # --- files in the run directory, one folder per sweep (the sanity check is skipped)
    assert set(callback.reports) == {"val-epoch000", "val-epoch001", "test"}
    assert callback.last_report is not None and callback.last_report["dir"] == tmp_path / "tradeoff" / "test"
    for tag, pairs, split in (
        ("val-epoch000", 3, "validation"),
        ("val-epoch001", 3, "validation"),
        ("test", 5, "test"),
    ):
        folder = tmp_path / "tradeoff" / tag
        for name in REPORT_FILES:
            assert (folder / name).stat().st_size > 0, f"{tag}/{name} missing"
        assert _csv_multipliers(folder / "curve.csv") == GRID
        curve = TradeoffCurve.from_json(folder / "curve.json")
        assert curve.multipliers == GRID and curve.n_pairs == [pairs] * len(GRID)
        assert curve.split == split and curve.form == "vector" and curve.objective == "split" and curve.layer == 2
        assert curve.reduction == "mean" and curve.pair_preference.shape == (len(GRID), pairs)
        assert (folder / "report.md").read_text().startswith("# Steering trade-off report")
    test_curve = TradeoffCurve.from_json(tmp_path / "tradeoff" / "test" / "curve.json")
    # the module's own test metrics (at eval_multiplier = 1 and unsteered) are the sweep's values there
    assert test_curve.preference[GRID.index(1.0)] == pytest.approx(results["test/pref_logodds"], abs=1e-5)
    assert test_curve.utility[GRID.index(1.0)] == pytest.approx(results["test/util_logodds"], abs=1e-5)
    assert test_curve.preference[GRID.index(0.0)] == pytest.approx(results["test/pref_logodds_base"], abs=1e-5)
    assert test_curve.preference[-1] != pytest.approx(test_curve.preference[0], abs=1e-6), "the control did nothing"

    # --- the offline W&B run: tables, images, scalars and chart panels
    (run_dir,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    run_dir = Path(run_dir)
    history, charts = _wandb_history_and_charts(run_dir)  # waits until the run's files are complete
    tables = {
        stage: sorted((run_dir / "files" / "media" / "table" / "tradeoff" / stage).glob("curve_*.table.json"))
        for stage in ("val", "test")
    }
    assert len(tables["val"]) == 2 and len(tables["test"]) == 1
    table = json.loads(tables["test"][0].read_text())
    assert table["columns"] == list(COLUMNS)  # free-text pairs: no per-class columns
    assert [row[0] for row in table["data"]] == GRID
    pref = table["columns"].index("preference")
    np.testing.assert_allclose([row[pref] for row in table["data"]], test_curve.preference, rtol=1e-12)
    images = run_dir / "files" / "media" / "images" / "tradeoff" / "test"
    assert {p.name.split("_plot")[0] for p in images.glob("*.png")} == {"preference", "utility", "tradeoff"}

    for stage in ("val", "test"):
        assert charts[f"tradeoff/{stage}/preference_vs_m"]["panel_config"]["fieldSettings"]["y"] == "preference"
        assert charts[f"tradeoff/{stage}/utility_vs_m"]["panel_config"]["fieldSettings"]["y"] == "utility"
        assert charts[f"tradeoff/{stage}/preference_vs_utility"]["panel_config"]["panelDefId"] == "wandb/scatter/v0"
    selected = [json.loads(row["tradeoff/test/selected_m"]) for row in history if "tradeoff/test/selected_m" in row]
    assert len(selected) == 1 and selected[0] in GRID
    logged = [row for row in history if "tradeoff/test/preference@m=1" in row]
    assert json.loads(logged[0]["tradeoff/test/preference@m=1"]) == pytest.approx(test_curve.preference[-1])
    chart_tables = [row for row in history if "tradeoff/test/preference_vs_m_table/path" in row]
    assert json.loads(chart_tables[0]["tradeoff/test/preference_vs_m_table/path"]).endswith(".table.json")


# ----------------------------------------------------------------------------- any logger, options
def test_callback_default_grid_max_pairs_and_epoch_interval(tiny_backbone_dir, sentiment_like_jsonl, tmp_path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    L.seed_everything(0, verbose=False)
    model = _module(tiny_backbone_dir)  # training grid {0.2, ..., 2.0}
    data = PolarityDataModule(dataset=str(sentiment_like_jsonl), batch_size=4, eval_batch_size=2)
    out = tmp_path / "curves"
    callback = TradeoffCurveCallback(every_n_val_epochs=2, max_pairs=2, on_test=False, output_dir=str(out))
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=logger, callbacks=[callback], enable_checkpointing=False,
        enable_progress_bar=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(model, data)
    trainer.test(model, data)
    assert set(callback.reports) == {"val-epoch001"}  # every 2nd validation epoch; no test sweep
    expected = default_grid(model.multipliers)
    assert expected == [round(0.2 * k, 6) for k in range(-10, 11)]  # 21 points: enough for the fits
    assert _csv_multipliers(out / "val-epoch001" / "curve.csv") == expected
    curve = TradeoffCurve.from_json(out / "val-epoch001" / "curve.json")
    assert curve.n_pairs == [2] * len(expected)
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("tradeoff/val/selected_m")]
    assert len(rows) == 1
    assert float(rows[0]["tradeoff/val/preference@m=2"]) == pytest.approx(curve.preference[-1])
    assert float(rows[0]["tradeoff/val/n_pairs"]) == 2
    fits = fit_curve(curve)  # the fits' R² are logged next to the report that shows them
    assert isinstance(fits["preference"], CurveFit)
    for kind in ("preference", "utility"):
        logged = rows[0].get(f"tradeoff/val/fit_r2_{kind}")
        if isinstance(fits[kind], CurveFit):
            assert float(logged) == pytest.approx(fits[kind].r2, rel=1e-6)
        else:
            assert not logged


# ----------------------------------------------------------------------------- pieces
def test_default_grid_subset_filter_and_dedupe() -> None:
    assert default_grid([2, 4, 20]) == [float(2 * k) for k in range(-10, 11)]
    assert default_grid(None, points=5) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    with pytest.raises(ValueError):
        default_grid([1.0], points=4)
    with pytest.raises(ValueError, match="contain 0"):
        TradeoffCurveCallback(multipliers=[1.0, 2.0])
    batches = [random_pair_batch(rows=3, seed=s) for s in range(3)]
    for k, batch in enumerate(batches):
        batch.index = batch.index + 3 * k
    assert pair_ids(batches).tolist() == [list(range(9)), [-1] * 9]  # no answer_class: free text
    assert [b.index.tolist() for b in only(batches, {1, 2, 7})] == [[1, 2], [7]]
    losses = SweepLosses(
        [0.0, 1.0],
        torch.tensor([[1.0, 2.0, 3.0, 1.0], [4.0, 5.0, 6.0, 4.0]], dtype=torch.float64),
        torch.zeros(2, 4, dtype=torch.float64),
        torch.tensor([5, 2, 9, 5]),  # a padded duplicate of pair 5, as a DistributedSampler makes
        "mean",
        torch.tensor([1, 0, 1, 1]),
    )
    kept = dedupe(losses)
    assert kept.index.tolist() == [2, 5, 9] and kept.l_pos[1].tolist() == [5.0, 4.0, 6.0]
    assert kept.answer_class.tolist() == [0, 1, 1]


# ----------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_test_sweep(backbone_dir: str, data_file: str, out_dir: str, devices: int) -> None:
    """Script body: ``trainer.test`` with the callback (test sweep only), on ``devices`` CPU processes."""
    L.seed_everything(0, verbose=False)
    model = _module(Path(backbone_dir))
    data = PolarityDataModule(dataset=data_file, eval_batch_size=2)
    callback = TradeoffCurveCallback(multipliers=GRID, output_dir=out_dir)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
        callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False, default_root_dir=out_dir,
    )  # fmt: skip
    trainer.test(model, data)


@pytest.mark.slow
def test_ddp_two_processes_give_the_single_process_curve(tiny_backbone_dir, sentiment_like_jsonl, tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MASTER_ADDR": "127.0.0.1"}
    for devices in (1, 2):
        env["MASTER_PORT"] = str(_free_port())
        command = [sys.executable, "-m", "tests.test_tradeoff_callback", str(tiny_backbone_dir),
                   str(sentiment_like_jsonl), str(tmp_path / f"d{devices}"), str(devices)]  # fmt: skip
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    one = TradeoffCurve.from_json(tmp_path / "d1" / "test" / "curve.json")
    two = TradeoffCurve.from_json(tmp_path / "d2" / "test" / "curve.json")
    assert one.extra["processes"] == 1 and two.extra["processes"] == 2
    assert one.n_pairs == two.n_pairs == [5] * len(GRID)  # uneven shards (3 + 2), no padding copies
    np.testing.assert_allclose(two.pair_preference, one.pair_preference, atol=1e-6, rtol=0)
    np.testing.assert_allclose(two.pair_utility, one.pair_utility, atol=1e-6, rtol=0)
    np.testing.assert_allclose(two.preference, one.preference, atol=1e-6, rtol=0)
    assert two.accuracy == one.accuracy and two.anti_steerable == one.anti_steerable


if __name__ == "__main__":
    _run_test_sweep(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))


def test_callback_sweeps_only_the_batches_the_trainer_evaluates(
    tiny_backbone_dir, sentiment_like_jsonl, tmp_path
) -> None:
    L.seed_everything(0, verbose=False)
    model = _module(tiny_backbone_dir)
    data = PolarityDataModule(dataset=str(sentiment_like_jsonl), batch_size=4, eval_batch_size=2)
    callback = TradeoffCurveCallback(multipliers=[-1.0, 0.0, 1.0], output_dir=str(tmp_path / "curves"))
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, callbacks=[callback], enable_checkpointing=False,
        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=1, limit_test_batches=2,
        default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(model, data)
    trainer.test(model, data)
    assert len(data.tokenized("validation")) > 2 and len(data.tokenized("test")) > 4
    assert TradeoffCurve.from_json(tmp_path / "curves" / "val-epoch000" / "curve.json").n_pairs == [2] * 3
    assert TradeoffCurve.from_json(tmp_path / "curves" / "test" / "curve.json").n_pairs == [4] * 3
