"""bf16: ``trainer.precision`` ``bf16-true`` and ``bf16-mixed`` train every form with a bf16 backbone, a float32
control (cast at the point of use) and float64 metrics; Lightning's bitsandbytes plugin is refused."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_split import SteeringModule
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.interventions import LoRAOptions, form_options
from lightning_split.objectives import SPLIT
from lightning_split.placement import backbone_device_map, backbone_dtype, check_precision_plugin


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def _fit(backbone: Path, jsonl: Path, tmp_path: Path, precision: str, form: str) -> tuple[SteeringModule, list[float]]:
    L.seed_everything(0)
    module = SteeringModule(
        backbone=str(backbone),
        form=form_options(form),
        layer=2,
        training={"lr": 0.05},
        objective=SPLIT(bidirectional=False),
    )
    losses = _Losses()
    trainer = L.Trainer(
        accelerator="cpu", precision=precision, max_steps=4, limit_val_batches=1, num_sanity_val_steps=0,
        val_check_interval=4, check_val_every_n_epoch=None, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, callbacks=[losses],
    )  # fmt: skip
    data = PolarityDataModule(dataset=str(jsonl), batch_size=2, eval_batch_size=2, train_size=4)
    trainer.fit(module, datamodule=data)
    return module, losses.values


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "form"),
    [
        ("bf16-true", "vector"),
        ("bf16-true", "lora"),
        ("bf16-true", "local_weight"),
        ("bf16-true", "reft"),
        ("bf16-true", "full"),
        ("bf16-mixed", "lora"),
        ("bf16-mixed", "full"),
    ],
)
def test_bf16_trains_with_float32_control_and_float64_metrics(
    tiny_backbone_dir, sentiment_like_jsonl, tmp_path, precision, form
):
    module, losses = _fit(tiny_backbone_dir, sentiment_like_jsonl, tmp_path, precision, form)
    assert {p.dtype for p in module.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in module.control.parameters()} == {torch.float32}
    assert module.dtype == torch.float32
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], f"loss did not fall: {losses}"  # 4 steps over the same 4 pairs
    val = module.trainer.callback_metrics["val/pref_logodds"]
    assert val.dtype == torch.float64 and torch.isfinite(val)
    metric = module.metrics["val_steered"]["pref_logodds"]
    states = [v for v in metric.metric_state.values() if torch.is_tensor(v) and v.is_floating_point()]
    assert states and all(v.dtype == torch.float64 for v in states)


def test_to_dtype_moves_but_never_casts_the_control(tiny_backbone_dir):
    module = SteeringModule(backbone=str(tiny_backbone_dir), form=LoRAOptions(), layer=2)
    module.configure_model()
    module.to(torch.bfloat16)
    module.to("cpu", torch.float16)
    module.to(dtype=torch.float64)
    assert {p.dtype for p in module.control.parameters()} == {torch.float32}
    assert module.dtype == torch.float32
    assert "backbone" not in dict(module.named_children()), "the backbone must not be a submodule"
    assert not any(name.startswith("backbone") for name, _ in module.named_parameters())
    assert next(module.backbone.parameters()).dtype == torch.float32  # untouched by the casts above


def test_backbone_dtype_follows_trainer_precision():
    assert backbone_dtype("float32", "bf16-true") == "bfloat16"
    assert backbone_dtype("float32", "bf16-mixed") == "bfloat16"
    assert backbone_dtype("auto", "bf16-true") == "bfloat16"
    assert backbone_dtype("bfloat16", "bf16-true") == "bfloat16"
    assert backbone_dtype("float32", "32-true") == "float32"
    assert backbone_dtype("bfloat16", "32-true") == "bfloat16"
    assert backbone_dtype("float32", None) == "float32"
    with pytest.raises(ValueError, match="contradicts trainer precision"):
        backbone_dtype("float16", "bf16-true")


def test_device_map_is_one_full_copy_per_process_never_auto():
    assert backbone_device_map("cpu", quantized=True) == "cpu"
    assert backbone_device_map("cpu", quantized=False) is None
    assert backbone_device_map(torch.device("cuda", 1), quantized=True) == {"": 1}
    assert backbone_device_map(torch.device("cuda", 0), quantized=False) == {"": 0}


@pytest.mark.parametrize("quantization", [None, "nf4"])
def test_bitsandbytes_precision_plugin_is_refused_before_loading(tiny_backbone_dir, quantization):
    from lightning.pytorch.plugins.precision import BitsandbytesPrecision

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    trainer.strategy.precision_plugin = BitsandbytesPrecision("nf4", dtype=torch.bfloat16)  # CPU Trainer refuses it
    module = SteeringModule(
        backbone=str(tiny_backbone_dir), form=LoRAOptions(), backbone_options={"quantization": quantization}
    )
    module.trainer = trainer
    with pytest.raises(ValueError, match="BitsandbytesPrecision plugin" + (" on top of" if quantization else "")):
        module.setup("fit")
    assert module.backbone is None, "the backbone was loaded before the configuration was checked"
    check_precision_plugin(L.Trainer(accelerator="cpu", logger=False), "nf4")  # the default plugin passes
