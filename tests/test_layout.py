"""Tests of :mod:`lightning_split.layout` on tiny random models of every supported architecture."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, OPTConfig

from lightning_split.layout import (
    ModelLayout,
    UnsupportedArchitectureError,
    discover_layout,
    middle_layer,
)
from tests.tiny_models import TINY_ARCHS, TINY_HIDDEN, TINY_INTERMEDIATE, make_tiny_model

EXPECTED = {
    # arch: (decoder attr on the model, blocks attr, down proj path)
    "llama": ("model", "layers", "mlp.down_proj"),
    "mistral": ("model", "layers", "mlp.down_proj"),
    "qwen2": ("model", "layers", "mlp.down_proj"),
    "qwen3": ("model", "layers", "mlp.down_proj"),
    "gemma2": ("model", "layers", "mlp.down_proj"),
    "gemma3": ("model", "layers", "mlp.down_proj"),
    "gpt2": ("transformer", "h", "mlp.c_proj"),
}

IDS = torch.tensor([[1, 5, 9, 17, 33, 65, 7, 3, 11, 12, 40, 2]])


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_discovery_finds_the_modules(arch: str) -> None:
    model = make_tiny_model(arch)
    layout = discover_layout(model)
    decoder_attr, blocks_attr, down_path = EXPECTED[arch]
    assert layout.decoder is getattr(model, decoder_attr)
    assert layout.blocks is getattr(layout.decoder, blocks_attr)
    assert layout.blocks_attr == blocks_attr
    assert layout.down_proj_path == down_path
    assert layout.num_layers == 4 == len(layout.blocks)
    assert layout.hidden_size == TINY_HIDDEN
    intermediate = 4 * TINY_HIDDEN if arch == "gpt2" else TINY_INTERMEDIATE
    assert layout.intermediate_size == intermediate
    assert layout.lm_head is model.lm_head
    assert middle_layer(layout) == 2
    for layer in range(layout.num_layers):
        down = layout.down_proj(layer)
        assert down is layout.blocks[layer].get_submodule(down_path)
        # the down-projection maps intermediate -> hidden (GPT-2's Conv1D stores the weight [in, out])
        expected_shape = (intermediate, TINY_HIDDEN) if layout.down_proj_conv1d else (TINY_HIDDEN, intermediate)
        assert tuple(down.weight.shape) == expected_shape
    assert layout.down_proj_conv1d is (arch == "gpt2")


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_down_proj_sees_intermediate_and_writes_hidden(arch: str) -> None:
    model = make_tiny_model(arch)
    layout = discover_layout(model)
    seen: dict[str, torch.Size] = {}

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen["in"], seen["out"] = args[0].shape, output.shape

    handle = layout.down_proj(1).register_forward_hook(hook)
    with torch.no_grad():
        model(IDS)
    handle.remove()
    assert seen["in"][-1] == layout.intermediate_size
    assert seen["out"][-1] == layout.hidden_size


def test_softcapping_read_from_config() -> None:
    assert discover_layout(make_tiny_model("gemma2")).final_logit_softcapping == 30.0
    assert discover_layout(make_tiny_model("gemma3")).final_logit_softcapping is None
    assert discover_layout(make_tiny_model("gemma3", final_logit_softcapping=20.0)).final_logit_softcapping == 20.0
    assert discover_layout(make_tiny_model("llama")).final_logit_softcapping is None


def test_override_paths_on_known_model() -> None:
    model = make_tiny_model("llama")
    layout = discover_layout(model, blocks_path="model.layers", down_proj_path="mlp.up_proj")
    assert layout.down_proj(0) is model.model.layers[0].mlp.up_proj
    assert layout.lower_layers_reusable is True


def _tiny_opt() -> nn.Module:
    config = OPTConfig(
        vocab_size=128,
        hidden_size=64,
        ffn_dim=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def test_unsupported_architecture_names_the_override() -> None:
    model = _tiny_opt()
    with pytest.raises(UnsupportedArchitectureError) as info:
        discover_layout(model)
    message = str(info.value)
    assert "blocks_path=" in message and "down_proj_path=" in message
    assert "OPTForCausalLM" in message
    with pytest.raises(UnsupportedArchitectureError, match="down_proj_path="):
        discover_layout(model, blocks_path="model.decoder.layers")


def test_override_describes_unsupported_architecture() -> None:
    model = _tiny_opt()
    layout = discover_layout(model, blocks_path="model.decoder.layers", down_proj_path="fc2")
    assert isinstance(layout, ModelLayout)
    assert layout.decoder is model.model.decoder
    assert layout.blocks_attr == "layers"
    assert layout.down_proj(1) is model.model.decoder.layers[1].fc2
    assert tuple(layout.down_proj(1).weight.shape) == (64, 96)
    assert layout.intermediate_size == 96
    assert layout.hidden_size == 64
    assert layout.lower_layers_reusable is True  # probed: OPT's blocks only read their own input


def test_bad_override_paths_raise() -> None:
    model = make_tiny_model("llama")
    with pytest.raises(UnsupportedArchitectureError, match="blocks_path="):
        discover_layout(model, blocks_path="model.nope")
    with pytest.raises(UnsupportedArchitectureError, match="blocks_path="):
        discover_layout(model, blocks_path="model.norm")
    with pytest.raises(UnsupportedArchitectureError, match="down_proj_path="):
        discover_layout(model, down_proj_path="mlp.missing")


def test_block_index_is_checked() -> None:
    layout = discover_layout(make_tiny_model("qwen2"))
    with pytest.raises(IndexError):
        layout.down_proj(4)
    with pytest.raises(IndexError):
        layout.block(-1)


def test_peft_wrapper_is_unwrapped() -> None:
    from peft import LoraConfig, get_peft_model

    model = make_tiny_model("llama")
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    layout = discover_layout(wrapped)
    assert layout.decoder is model.model
    assert layout.num_layers == 4


def test_repr_is_short() -> None:
    text = repr(discover_layout(make_tiny_model("gemma3")))
    assert "gemma3_text" in text and "Linear" not in text
