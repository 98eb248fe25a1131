"""LoRA controls exchange with peft's adapter format: peft loads our export with the same logits, and back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file

from lightning_split.interventions import LoRAIntervention, LoRAOptions, build_intervention
from lightning_split.interventions.peft_format import (
    down_proj_module_path,
    export_peft_adapter,
    import_peft_adapter,
)
from lightning_split.layout import discover_layout
from lightning_split.steering import steer
from tests.tiny_models import make_tiny_model

LAYER = 2
DOWN_PROJ = {"llama": "model.layers.2.mlp.down_proj", "gemma3": "model.layers.2.mlp.down_proj",
             "gpt2": "transformer.h.2.mlp.c_proj"}  # fmt: skip


def _random_lora(arch: str, seed: int = 0) -> tuple[torch.nn.Module, LoRAIntervention]:
    model = make_tiny_model(arch)
    lora = build_intervention(LoRAOptions(rank=3, alpha=7.0), discover_layout(model), LAYER)
    assert isinstance(lora, LoRAIntervention)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lora.lora_A.weight.copy_(torch.randn(lora.lora_A.weight.shape, generator=g) * 0.2)
        lora.lora_B.weight.copy_(torch.randn(lora.lora_B.weight.shape, generator=g) * 0.2)
    return model, lora


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_peft_loads_export_with_same_logits(arch: str, tmp_path: Path) -> None:
    model, lora = _random_lora(arch)
    out = export_peft_adapter(lora, model, tmp_path / "adapter", base_model_name_or_path="tiny/base")

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["target_modules"] == [DOWN_PROJ[arch]]
    assert (config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (3, 7.0, "tiny/base")
    assert config["peft_type"] == "LORA" and config["fan_in_fan_out"] == (arch == "gpt2")
    assert sorted(load_file(str(out / "adapter_model.safetensors"))) == [
        f"base_model.model.{DOWN_PROJ[arch]}.lora_A.weight",
        f"base_model.model.{DOWN_PROJ[arch]}.lora_B.weight",
    ]

    ids = _ids()
    with torch.no_grad():
        base = model(ids).logits
        with steer(discover_layout(model), [lora], 1.0):
            ours = model(ids).logits
        peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(out)).eval()
        theirs = peft_model(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    assert (ours - base).abs().max() > 1e-2, "the adapter changed nothing; the comparison is vacuous"


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_key_names_match_peft_itself(arch: str, tmp_path: Path) -> None:
    model, lora = _random_lora(arch)
    path = down_proj_module_path(model, LAYER)
    assert path == DOWN_PROJ[arch]
    config = LoraConfig(r=3, lora_alpha=7, target_modules=[path], task_type="CAUSAL_LM",
                        fan_in_fan_out=arch == "gpt2")  # fmt: skip
    reference = get_peft_model(copy.deepcopy(model), config)
    ours = load_file(str(export_peft_adapter(lora, model, tmp_path / "a") / "adapter_model.safetensors"))
    peft_state = get_peft_model_state_dict(reference)
    assert set(ours) == set(peft_state)
    assert all(ours[k].shape == peft_state[k].shape for k in ours)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_round_trip_is_identity(arch: str, tmp_path: Path) -> None:
    model, lora = _random_lora(arch, seed=3)
    back = import_peft_adapter(export_peft_adapter(lora, model, tmp_path / "a"), model)
    assert back.config() == lora.config()
    assert torch.equal(back.lora_A.weight, lora.lora_A.weight)
    assert torch.equal(back.lora_B.weight, lora.lora_B.weight)
    assert back.scaling == pytest.approx(7.0 / 3.0)


def test_import_of_adapter_saved_by_peft(tmp_path: Path) -> None:
    """An adapter peft itself trained and saved imports into a control that reproduces peft's logits."""
    model = make_tiny_model("qwen2")
    config = LoraConfig(r=2, lora_alpha=5, target_modules=["model.layers.1.mlp.down_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(copy.deepcopy(model), config)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    peft_model.save_pretrained(str(tmp_path / "peft"))
    lora = import_peft_adapter(tmp_path / "peft", model)
    assert (lora.layer, lora.rank, lora.alpha) == (1, 2, 5.0)
    ids = _ids(1)
    with torch.no_grad():
        theirs = peft_model.eval()(input_ids=ids).logits
        with steer(discover_layout(model), [lora], 1.0):
            ours = model(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_import_rejects_what_it_cannot_represent(tmp_path: Path) -> None:
    model, lora = _random_lora("llama")
    out = export_peft_adapter(lora, model, tmp_path / "a")
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        import_peft_adapter(out, model)
    (out / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["model.layers.2.mlp.up_proj"]}))
    with pytest.raises(ValueError, match="not the down-projection"):
        import_peft_adapter(out, model)
    other = make_tiny_model("llama", intermediate_size=80)
    (out / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape"):
        import_peft_adapter(out, other)
    with pytest.raises(FileNotFoundError, match="not a peft adapter"):
        import_peft_adapter(tmp_path / "missing", model)


@pytest.mark.parametrize("multiplier", [0.0, 2.5, -1.25])
def test_folded_multiplier_gives_peft_our_logits_at_m(multiplier: float, tmp_path: Path) -> None:
    """peft has no multiplier: ``lora_alpha·m`` (lightning_split.export.peft_lora.folded) makes its adapter ``m·Δh``."""
    from lightning_split.export.peft_lora import folded

    model, lora = _random_lora("llama", seed=7)
    out = export_peft_adapter(folded(lora, multiplier), model, tmp_path / "a")
    assert json.loads((out / "adapter_config.json").read_text())["lora_alpha"] == pytest.approx(7.0 * multiplier)
    ids = _ids(2)
    with torch.no_grad():
        with steer(discover_layout(model), [lora], multiplier):
            ours = model(ids).logits
        theirs = PeftModel.from_pretrained(copy.deepcopy(model), str(out)).eval()(input_ids=ids).logits
        base = model(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    assert multiplier == 0.0 or (ours - base).abs().max() > 1e-2


def test_several_blocks_export_as_one_adapter(tmp_path: Path) -> None:
    model = make_tiny_model("llama")
    layout = discover_layout(model)
    loras = [build_intervention(LoRAOptions(rank=3, alpha=7.0), layout, layer) for layer in (1, 3)]
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in (p for lora in loras for p in lora.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    out = export_peft_adapter(loras, model, tmp_path / "a")
    config = json.loads((out / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["model.layers.1.mlp.down_proj", "model.layers.3.mlp.down_proj"]
    ids = _ids(3)
    with torch.no_grad():
        with steer(layout, loras, 1.0):
            ours = model(ids).logits
        theirs = PeftModel.from_pretrained(copy.deepcopy(model), str(out)).eval()(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="differ in"):
        export_peft_adapter([loras[0], build_intervention(LoRAOptions(rank=2), layout, 2)], model, tmp_path / "b")
