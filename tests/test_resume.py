"""Checkpoints: kill-and-resume equality, control-only and ``weights_only``-safe content, mismatch refusal.

The resume test runs the real CLI: 10 training pairs, batch 2 (5 steps an epoch), 2 epochs, a checkpoint
every 3 steps with ``save_last``. One run is paused at the start of its 4th batch (after the step-3
checkpoint, in the middle of epoch 0) and killed with SIGKILL; ``--ckpt_path last`` resumes it. Its final
control must equal the control of an uninterrupted run with the same config. Without the resumable training
loader Lightning would restart epoch 0 from its first batch and train 13 steps instead of 10.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_split import SteeringModule
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.interventions import LoRAOptions, VectorOptions
from lightning_split.models.steering_module import CHECKPOINT_KEY
from tests.cli_runs import cli_command, cli_env, control, run_cli, tiny_config, wait_for, write_config

PLAIN_TYPES = (str, int, float, bool, type(None))


def _resume_config(backbone: Path, dataset: Path, marker: Path) -> dict:
    config = tiny_config(backbone, dataset, data_batch_size=2)
    config["trainer"]["callbacks"].append(
        {"class_path": "tests.cli_runs.PauseAtStep", "init_args": {"step": 3, "marker": str(marker)}}
    )
    return config


def _is_plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, PLAIN_TYPES)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tiny_backbone_dir, sentiment_like_jsonl, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for run in (straight, killed):
        write_config(run, _resume_config(tiny_backbone_dir, sentiment_like_jsonl, run / "paused"))
    (straight / "paused").write_text("never pause")
    # the uninterrupted run and the run to kill go side by side (one thread each)
    kw = {"env": cli_env(), "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    reference = subprocess.Popen(cli_command(), cwd=straight, **kw)
    victim = subprocess.Popen(cli_command(), cwd=killed, **kw)
    try:
        wait_for(killed / "paused", victim, timeout=240)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed / "logs" / "version_0" / "control").exists(), "the killed run finished anyway"

    last = killed / "ckpt" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)  # no arbitrary unpickling needed
    assert checkpoint["global_step"] == 3 and checkpoint["epoch"] == 0
    loader_state = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state == [{"epoch": 0, "batches": 3}], "the training loader's position was not saved"

    run_cli(killed, "--ckpt_path", "last")
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, f"uninterrupted run failed:\n{out[-2000:]}\n{err[-4000:]}"

    resumed, uninterrupted = control(killed), control(straight)
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        torch.testing.assert_close(resumed[key], uninterrupted[key], atol=1e-6, rtol=0)
    final = torch.load(killed / "ckpt" / "epoch=1-step=9.ckpt", weights_only=True)
    reference_final = torch.load(straight / "ckpt" / "epoch=1-step=9.ckpt", weights_only=True)
    assert final["global_step"] == reference_final["global_step"] == 9
    for key, value in reference_final["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def lora_checkpoint(tiny_backbone_dir, tmp_path_factory) -> tuple[Path, SteeringModule]:
    """A checkpoint of a 2-step SPLIT LoRA fit on the tiny backbone (layer 2), and its module."""
    root = tmp_path_factory.mktemp("ckpt")
    jsonl = root / "pairs.jsonl"
    rows = [
        f'{{"question": "Say something about item {i}.", "matching": "Item {i} is great.", '
        f'"not_matching": "Item {i} is bad.", "split": "{"train" if i < 4 else "validation" if i < 6 else "test"}"}}'
        for i in range(8)
    ]
    jsonl.write_text("\n".join(rows) + "\n")
    module = SteeringModule(backbone=str(tiny_backbone_dir), form=LoRAOptions(), layer=2, training={"lr": 0.05})
    data = PolarityDataModule(dataset=str(jsonl), batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    path = root / "fit.ckpt"
    trainer.save_checkpoint(path)
    return path, module


def test_checkpoint_holds_only_the_control_and_plain_types(lora_checkpoint, tiny_backbone_dir):
    path, module = lora_checkpoint
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint["state_dict"]) == {"control.0.lora_A.weight", "control.0.lora_B.weight"}
    assert not any(k.startswith("backbone") for k in module.state_dict()), "the backbone is in the module tree"
    control_bytes = sum(v.numel() * v.element_size() for v in checkpoint["state_dict"].values())
    backbone_bytes = sum(f.stat().st_size for f in Path(tiny_backbone_dir).glob("*.safetensors"))
    size = path.stat().st_size
    # control + two AdamW moments + run state; the tiny backbone alone is about 13 MB
    assert size < 3 * control_bytes + 64_000, size
    assert size < backbone_bytes / 50
    metadata = checkpoint[CHECKPOINT_KEY]
    assert _is_plain(metadata) and _is_plain(checkpoint["hyper_parameters"])
    assert metadata["form"] == "lora" and metadata["interventions"][0]["layer"] == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"form": VectorOptions()}, r"mismatch on 'form'.*'lora'.*'vector'"),
        ({"layer": 1}, r"mismatch on 'interventions'"),
        ({"form": LoRAOptions(rank=8)}, r"mismatch on 'interventions'"),
        ({"backbone": "other-model"}, r"mismatch on 'backbone'"),
    ],
)
def test_mismatched_checkpoint_is_refused(lora_checkpoint, tiny_backbone_dir, change, message):
    path, _ = lora_checkpoint
    checkpoint = torch.load(path, weights_only=True)
    settings = {"backbone": str(tiny_backbone_dir), "form": LoRAOptions(), "layer": 2, **change}
    module = SteeringModule(**{**settings, "backbone": str(tiny_backbone_dir)})  # built on the tiny model
    module.configure_model()
    if "backbone" in change:
        module.hparams.backbone = change["backbone"]
    with pytest.raises(ValueError, match=message):
        module.on_load_checkpoint(checkpoint)


def test_resuming_into_another_form_fails_through_the_trainer(lora_checkpoint, tiny_backbone_dir):
    path, _ = lora_checkpoint
    module = SteeringModule(backbone=str(tiny_backbone_dir), form=VectorOptions(), layer=2)
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False)
    data = PolarityDataModule(dataset=str(path.parent / "pairs.jsonl"), batch_size=2)
    with pytest.raises(ValueError, match="resume with the same model, form and layer"):
        trainer.fit(module, datamodule=data, ckpt_path=path)


def test_checkpoint_rebuilds_the_module_with_its_objective_and_form(lora_checkpoint):
    path, module = lora_checkpoint
    loaded = SteeringModule.load_from_checkpoint(path)
    assert loaded.form == "lora" and loaded.form_options == LoRAOptions()
    assert type(loaded.objective) is type(module.objective)
    assert loaded.objective.init_args() == module.objective.init_args()
    assert dict(loaded.hparams) == dict(module.hparams)
