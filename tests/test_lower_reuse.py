"""The lower-state reuse probe: it finds reuse exact where it is and not where it is not, once per model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from lightning_split.engine import PairScorer
from lightning_split.layout import discover_layout
from lightning_split.lower_reuse import block_io, probe_lower_reuse, upper_blocks_only
from tests.tiny_models import TINY_ARCHS, make_tiny_model

IDS = torch.tensor([[1, 5, 9, 17, 33, 65, 7, 3, 11, 12, 40, 2]])
TOY_VOCAB, TOY_HIDDEN, TOY_LAYERS = 32, 8, 4


class _ToyBlock(nn.Module):
    """A residual MLP block; returns ``(hidden,)`` like transformers 4.x Gemma/GPT-2 when ``returns_tuple``."""

    def __init__(self, returns_tuple: bool) -> None:
        super().__init__()
        self.returns_tuple = returns_tuple
        self.up = nn.Linear(TOY_HIDDEN, 2 * TOY_HIDDEN)
        self.mlp = nn.Module()
        self.mlp.down_proj = nn.Linear(2 * TOY_HIDDEN, TOY_HIDDEN)

    def forward(
        self, hidden_states: torch.Tensor, shared: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor]:
        out = hidden_states + self.mlp.down_proj(torch.tanh(self.up(hidden_states)))
        if shared is not None:
            out = out + shared
        return (out,) if self.returns_tuple else out


class _ToyDecoder(nn.Module):
    """Scales the embeddings (as Gemma does in the decoder on transformers 4.x) before block 0.

    With ``share_first`` every block after the first also reads block 0's output (cross-layer sharing):
    the upper blocks then depend on more than their own input, and reusing a block's input is not exact.
    """

    def __init__(self, share_first: bool, returns_tuple: bool) -> None:
        super().__init__()
        self.share_first = share_first
        self.embed = nn.Embedding(TOY_VOCAB, TOY_HIDDEN)
        self.layers = nn.ModuleList(_ToyBlock(returns_tuple) for _ in range(TOY_LAYERS))

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, input_ids: torch.Tensor, **_: object) -> BaseModelOutput:
        hidden, first = self.embed(input_ids) * TOY_HIDDEN**0.5, None
        for i, block in enumerate(self.layers):
            out = block(hidden, shared=first)
            hidden = out[0] if isinstance(out, tuple) else out
            if i == 0 and self.share_first:
                first = hidden
        return BaseModelOutput(last_hidden_state=hidden)


class _ToyLM(nn.Module):
    def __init__(self, share_first: bool = False, returns_tuple: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.config = SimpleNamespace(model_type="toy", hidden_size=TOY_HIDDEN, intermediate_size=2 * TOY_HIDDEN)
        self.model = _ToyDecoder(share_first, returns_tuple)
        self.lm_head = nn.Linear(TOY_HIDDEN, TOY_VOCAB, bias=False)


def _toy_layout(model: _ToyLM):
    return discover_layout(model, blocks_path="model.layers", down_proj_path="mlp.down_proj")


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("start", [1, 3])
def test_upper_blocks_on_a_captured_input_give_the_plain_logits(arch: str, start: int) -> None:
    """Every supported architecture: block ``start``'s input, fed back with the lower blocks bypassed, is exact."""
    model = make_tiny_model(arch)
    layout = discover_layout(model)
    assert layout.lower_layers_reusable is True
    with torch.no_grad():
        reference = model(IDS).logits
        lower = block_io(layout, start, "input", input_ids=IDS)
        with upper_blocks_only(layout, start, lower):
            rerun = model(IDS).logits
        assert not torch.equal(model(IDS * 0 + 4).logits, reference), "the input does not matter"
    torch.testing.assert_close(rerun, reference, rtol=0, atol=0)
    assert all(type(block).__name__ != "_Bypassed" for block in layout.blocks), "blocks restored"


@pytest.mark.parametrize("returns_tuple", [False, True])
def test_probe_accepts_an_exact_model_whatever_its_blocks_return(returns_tuple: bool) -> None:
    model = _ToyLM(returns_tuple=returns_tuple)
    layout = _toy_layout(model)
    probe = probe_lower_reuse(layout)
    assert probe.exact and probe.block_returns_tuple is returns_tuple and probe.reason == ""
    assert PairScorer(model, layout).reuse_lower is True


@pytest.mark.parametrize("returns_tuple", [False, True])
def test_probe_rejects_cross_layer_sharing_and_the_scorer_runs_every_block(returns_tuple: bool) -> None:
    model = _ToyLM(share_first=True, returns_tuple=returns_tuple)
    layout = _toy_layout(model)
    with pytest.warns(UserWarning, match="recomputed in every pass.*AssertionError"):
        assert layout.lower_layers_reusable is False
    assert PairScorer(model, layout).reuse_lower is False
    lower = block_io(layout, 2, "input", input_ids=IDS[:, :5] % TOY_VOCAB)
    with pytest.raises(RuntimeError, match="not exact on this model"), upper_blocks_only(layout, 2, lower):
        pass


def test_probe_runs_once_per_model_instance_and_restores_modes() -> None:
    model = make_tiny_model("gemma2")
    layout = discover_layout(model)
    model.train()
    layout.blocks[1].eval()
    forwards = [0]
    handle = layout.decoder.register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    assert layout.lower_layers_reusable
    probed = forwards[0]
    assert probed == 3  # plain, capture, reuse
    assert layout.lower_layers_reusable and PairScorer(model, layout).reuse_lower
    assert discover_layout(model).lower_layers_reusable  # a new layout of the same model: cached too
    assert forwards[0] == probed
    handle.remove()
    assert model.training and layout.blocks[0].training and not layout.blocks[1].training
    other = make_tiny_model("gemma2")
    other_forwards = [0]
    discover_layout(other).decoder.register_forward_pre_hook(
        lambda *_: other_forwards.__setitem__(0, other_forwards[0] + 1)
    )
    assert discover_layout(other).lower_layers_reusable and other_forwards[0] == 3


def test_stale_lower_states_are_refused() -> None:
    model = make_tiny_model("llama")
    layout = discover_layout(model)
    lower = block_io(layout, 2, "input", input_ids=IDS)
    with pytest.raises(ValueError, match=r"shape .* computed for another input"), upper_blocks_only(layout, 2, lower):
        model(IDS[:, :5])
    with pytest.raises(ValueError, match="0 < start < 4"), upper_blocks_only(layout, 0, lower):
        pass


def test_single_block_model_is_not_reusable() -> None:
    model = make_tiny_model("llama", num_hidden_layers=1)
    with pytest.warns(UserWarning, match="single block"):
        assert discover_layout(model).lower_layers_reusable is False
