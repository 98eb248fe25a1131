"""The packed, lower-reusing engine equals the plain way (separate passes, full logits) on tiny models."""

from __future__ import annotations

import pytest
import torch

from lightning_split.engine import PairScorer, plain_pair_logprobs
from lightning_split.interventions import FORMS, build_control, form_options
from lightning_split.layout import discover_layout
from tests.pair_batches import random_pair_batch
from tests.tiny_models import make_tiny_model

ARCHS = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "gpt2")


def _randomise(control: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in control.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_packed_equals_plain_unsteered(arch: str, impl: str) -> None:
    if arch == "gemma2" and impl == "sdpa":
        pytest.skip("transformers has no sdpa attention for Gemma-2")
    model = make_tiny_model(arch, attn_implementation=impl)
    layout = discover_layout(model)
    batch = random_pair_batch(rows=3, seed=2)
    packed = PairScorer(model, layout).score(batch)
    plain = plain_pair_logprobs(model, layout, batch)
    torch.testing.assert_close(packed.pos, plain.pos, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.neg, plain.neg, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2", "gpt2"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("positions", ["all", "completion", "prompt"])
def test_packed_equals_plain_steered(arch: str, form: str, positions: str) -> None:
    model = make_tiny_model(arch)
    layout = discover_layout(model)
    control = build_control(form_options(form), layout, [2])
    _randomise(control)
    batch = random_pair_batch(rows=4, seed=3)
    m = torch.tensor([0.0, 1.5, -2.0, 0.7])
    for reuse in (True, False):
        scorer = PairScorer(model, layout, reuse_lower=reuse)
        assert scorer.reuse_lower is reuse  # the probe found reuse exact: the reuse path is what runs
        packed = scorer.score(batch, control, m, positions=positions)
        plain = plain_pair_logprobs(model, layout, batch, control, m, positions=positions)
        torch.testing.assert_close(packed.pos, plain.pos, atol=2e-5, rtol=0)
        torch.testing.assert_close(packed.neg, plain.neg, atol=2e-5, rtol=0)
    base = plain_pair_logprobs(model, layout, batch)
    assert not torch.allclose(plain.pos[1], base.pos[1], atol=1e-4), "the control changed nothing"


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
@pytest.mark.parametrize("form", FORMS)
def test_zero_multiplier_is_base_model_bit_for_bit(arch: str, form: str) -> None:
    model = make_tiny_model(arch)
    layout = discover_layout(model)
    control = build_control(form_options(form), layout, [1])
    _randomise(control)
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    from lightning_split.steering import steer

    with torch.no_grad():
        base = model(ids).logits
        with steer(layout, control, torch.zeros(2)):
            steered = model(ids).logits
        with steer(layout, control, torch.tensor([0.0, 1.0])):
            mixed = model(ids).logits
    assert torch.equal(base, steered)
    assert torch.equal(base[0], mixed[0])
    assert not torch.equal(base[1], mixed[1])
