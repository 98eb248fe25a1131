"""Helpers for tests that run ``lightning-split`` in subprocesses (DDP, kill-and-resume).

A run is a folder holding ``config.yaml`` (written by :func:`write_config`) and everything the run writes:
the CSV logger's ``logs/version_0/metrics.csv``, the control under ``logs/version_0/control`` and the
checkpoints under ``ckpt/``. Runs use one torch thread per process so that two DDP ranks fit on two cores.
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_config(backbone: Path, dataset: Path, **overrides: Any) -> dict[str, Any]:
    """A SPLIT LoRA run on the tiny backbone: CSV logger, checkpoints in ``ckpt/``, no progress bar, no sweep.

    Keyword overrides replace ``model.init_args`` (``model_*``), ``data`` (``data_*``), ``trainer``
    (``trainer_*``) or ``tradeoff`` (``tradeoff_*``) entries, e.g. ``data_batch_size=2``.
    """
    config: dict[str, Any] = {
        "seed_everything": 7,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 2,
            "gradient_clip_val": 1.0,
            "log_every_n_steps": 1,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": ".", "name": "logs", "version": 0},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": "ckpt", "save_last": True, "every_n_train_steps": 3, "save_top_k": -1},
                }
            ],
        },
        "model": {
            "class_path": "lightning_split.SteeringModule",
            "init_args": {
                "backbone": str(backbone),
                "objective": {"class_path": "lightning_split.objectives.SPLIT"},
                "form": {"class_path": "lightning_split.interventions.LoRAOptions"},
                "layer": 2,
                "training": {"lr": 0.05},
            },
        },
        "data": {"dataset": str(dataset), "batch_size": 4, "eval_batch_size": 1},
        "tradeoff": {"every_n_val_epochs": 0, "on_test": False},
    }
    for key, value in overrides.items():
        section, _, name = key.partition("_")
        target = config["model"]["init_args"] if section == "model" else config[section]
        target[name] = value
    return config


def snapshot(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file under ``folder``, by path relative to it (symbolic links skipped)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def write_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Writes ``config`` to ``run_dir/config.yaml`` (creating the folder) and returns the path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: repo importable, one thread, offline, no tips."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    env.pop("PL_GLOBAL_SEED", None)
    return env


def cli_command(*args: str, subcommand: str = "fit") -> list[str]:
    """``python -m lightning_split.cli <subcommand> --config config.yaml <args>``."""
    return [sys.executable, "-m", "lightning_split.cli", subcommand, "--config", "config.yaml", *args]


def run_cli(run_dir: Path, *args: str, subcommand: str = "fit", timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs the CLI in ``run_dir`` to completion (stdout and stderr piped); fails with its output when it
    exits non-zero."""
    done = subprocess.run(
        cli_command(*args, subcommand=subcommand),
        cwd=run_dir,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, f"lightning-split failed ({done.returncode}):\n{output}"
    return done


def wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    """Waits until ``path`` exists; fails with the process's output if it ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the run ended before pausing ({process.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)


def metrics(run_dir: Path) -> dict[str, float]:
    """The last logged value of every validation and test metric of a run (from the CSV logger)."""
    out: dict[str, float] = {}
    with open(run_dir / "logs" / "version_0" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value and key.startswith(("val/", "test/")):
                    out[key] = float(value)
    return out


def control(run_dir: Path) -> dict[str, torch.Tensor]:
    """The trained control a run saved at the end of ``fit``."""
    return load_file(str(run_dir / "logs" / "version_0" / "control" / "control.safetensors"))


class PauseAtStep(Callback):
    """A callback (given by class path in a CLI config) that stops a run for a while at one step.

    At the start of the batch after optimizer step ``step`` (so after a checkpoint written at that step), it
    writes ``marker`` and sleeps ``seconds``: the test kills the process during the pause, in the middle of an
    epoch. Once ``marker`` exists it does nothing, so the resumed run uses the same config unchanged.

    Args:
        step: the global step to pause at.
        marker: the file to create when pausing.
        seconds: how long to sleep.
    """

    def __init__(self, step: int, marker: str, seconds: float = 300.0) -> None:
        self.step, self.marker, self.seconds = step, Path(marker), seconds

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            time.sleep(self.seconds)
