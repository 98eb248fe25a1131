"""SIGTERM in the middle of ``lightning-split fit``: a clean stop with ``last.ckpt``, then an exact resume.

10 training pairs, batch 2, gradient accumulation 2: epoch 0 takes optimizer steps after batches 1, 3 and 4
(the last one), so epoch 1 starts at step 3. The run is paused at the start of epoch 1 and sent SIGTERM; it
must finish the accumulation (batches 0 and 1 of epoch 1, step 4), save ``last.ckpt`` there and exit with
status 143 without saving a control. ``--ckpt_path last`` then finishes the run, whose control must equal an
uninterrupted run's. Both runs print progress lines (stdout is a pipe); the resumed epoch counts from its
third batch out of 5.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from lightning_split.callbacks.sigterm import SIGTERM_EXIT_CODE

from tests.cli_runs import cli_command, cli_env, control, run_cli, tiny_config, wait_for, write_config

PROGRESS = ("--trainer.enable_progress_bar", "true", "--progress_interval", "0")


def _config(backbone: Path, dataset: Path, marker: Path) -> dict:
    config = tiny_config(backbone, dataset, data_batch_size=2, trainer_accumulate_grad_batches=2)
    config["trainer"]["callbacks"].append(
        {"class_path": "tests.cli_runs.PauseAtStep", "init_args": {"step": 3, "marker": str(marker), "seconds": 3}}
    )
    return config


def _training_progress(stdout: str) -> list[str]:
    """The epoch and count of every training progress line (validation lines left out)."""
    lines = [line.split(" · ") for line in stdout.splitlines() if line.startswith("[fit] epoch")]
    return [" · ".join(parts[:2]) for parts in lines if parts[1].startswith("batch")]


@pytest.mark.slow
def test_sigterm_mid_fit_stops_with_last_checkpoint_and_resume_is_exact(
    tiny_backbone_dir, sentiment_like_jsonl, tmp_path
):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for run in (straight, stopped):
        write_config(run, _config(tiny_backbone_dir, sentiment_like_jsonl, run / "paused"))
    (straight / "paused").write_text("never pause")
    kw = {"env": cli_env(), "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    reference = subprocess.Popen(cli_command(), cwd=straight, **kw)
    victim = subprocess.Popen(cli_command(*PROGRESS), cwd=stopped, **kw)
    try:
        wait_for(stopped / "paused", victim, timeout=240)
        os.kill(victim.pid, signal.SIGTERM)
        out, err = victim.communicate(timeout=120)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == SIGTERM_EXIT_CODE == 143, err[-4000:]
    last = stopped / "ckpt" / "last.ckpt"
    assert f"stopped by SIGTERM after step 4 (epoch 1); saved {last}" in err
    assert "resume: the same command with --ckpt_path last" in err
    assert not (stopped / "logs" / "version_0" / "control").exists(), "a stopped run must not save a final control"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 4 and checkpoint["epoch"] == 1
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]
    assert _training_progress(out)[-1] == "[fit] epoch 2 of 2 · batch 2/5 (40%)"

    resumed = run_cli(stopped, "--ckpt_path", "last", *PROGRESS)
    assert _training_progress(resumed.stdout) == [
        f"[fit] epoch 2 of 2 (resumed) · batch {n}/5 ({20 * n}%)" for n in (2, 3, 4, 5)
    ]
    reference_out, reference_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, f"uninterrupted run failed:\n{reference_out[-2000:]}\n{reference_err[-4000:]}"
    ours, theirs = control(stopped), control(straight)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-6, rtol=0)
