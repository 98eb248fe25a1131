"""Training through Lightning on a tiny backbone: seeded runs repeat exactly, only the control changes."""

from __future__ import annotations

import json

import lightning as L
import torch

from lightning_split import SteeringModule
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.interventions import LoRAOptions
from lightning_split.models.options import DEFAULT_MULTIPLIERS


def _fit(backbone_dir, data_file, root):
    L.seed_everything(7, verbose=False)
    model = SteeringModule(backbone=str(backbone_dir), form=LoRAOptions(rank=2), layer=2, training={"lr": 0.05})
    data = PolarityDataModule(dataset=str(data_file), batch_size=4)
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=str(root),
    )  # fmt: skip
    trainer.fit(model, data)
    return model


def test_seeded_training_is_repeatable_and_touches_only_the_control(tiny_backbone_dir, sentiment_like_jsonl, tmp_path):
    first = _fit(tiny_backbone_dir, sentiment_like_jsonl, tmp_path / "a")
    second = _fit(tiny_backbone_dir, sentiment_like_jsonl, tmp_path / "b")
    a, b = first.control.state_dict(), second.control.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert first.control[0].lora_B.weight.abs().sum() > 0, "training did not move the LoRA branch"
    fresh = SteeringModule(backbone=str(tiny_backbone_dir), form=LoRAOptions(), layer=2)
    fresh.configure_model()
    for (name, p), (_, q) in zip(first.backbone.named_parameters(), fresh.backbone.named_parameters()):
        assert torch.equal(p, q), f"backbone parameter {name} changed"
    saved = json.loads((tmp_path / "a" / "control" / "control.json").read_text())
    assert saved["form"] == "lora"
    settings = saved["settings"]  # the module's option groups, as its hyper-parameters hold them
    assert settings["training"] == {"multipliers": list(DEFAULT_MULTIPLIERS), "lr": 0.05, "weight_decay": 0.0}
    assert settings["evaluation"] == {"multiplier": 1.0, "nll_reduction": "mean"}
    assert settings["backbone_options"]["dtype"] == "float32" and "generation" not in settings
    assert settings["form"]["init_args"] == {"rank": 2, "alpha": None, "dropout": 0.0}
