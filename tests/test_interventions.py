"""Each control form, installed by ``steer``, equals the edit it stands for, computed by hand on tiny models."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from transformers import PreTrainedModel

from lightning_split.interventions import (
    FORMS,
    FullBlockOptions,
    LocalWeightOptions,
    LoRAOptions,
    ReFTOptions,
    VectorOptions,
    build_control,
    build_intervention,
    form_options,
)
from lightning_split.interventions.reft import ReFTIntervention
from lightning_split.layout import ModelLayout, discover_layout
from lightning_split.steering import generated_value_for, steer, token_mask_for
from tests.tiny_models import make_tiny_model

LAYER = 2


@cache
def _model(arch: str) -> PreTrainedModel:
    """One tiny model per architecture for the whole module (tests never modify it)."""
    return make_tiny_model(arch)


def _ids(rows: int = 3, length: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 128, (rows, length), generator=torch.Generator().manual_seed(seed))


def _randomise(module: nn.Module, seed: int = 1, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def _steered_logits(model: nn.Module, control: Any, m: Any, ids: torch.Tensor, **kw: Any) -> torch.Tensor:
    with steer(discover_layout(model), control, m, **kw):
        return _logits(model, ids)


def _edit_down_proj(layout: ModelLayout, layer: int, delta_w: torch.Tensor, delta_b: torch.Tensor) -> None:
    """Adds ``delta_w`` ([out, in]) and ``delta_b`` to the down-projection's weights (adds a bias if absent)."""
    parent_path, _, name = layout.down_proj_path.rpartition(".")
    parent = layout.block(layer).get_submodule(parent_path)
    old = getattr(parent, name)
    with torch.no_grad():
        if layout.down_proj_conv1d:  # GPT-2 Conv1D stores its weight as [in, out] and has a bias
            old.weight += delta_w.T
            old.bias += delta_b
            return
        new = nn.Linear(old.in_features, old.out_features, bias=True)
        new.weight.copy_(old.weight + delta_w)
        new.bias.copy_(delta_b if old.bias is None else old.bias + delta_b)
    setattr(parent, name, new)


def _with_output_hook(model: nn.Module, layer: int, edit: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` whose block ``layer`` output ``h`` is replaced by ``edit(h)``."""
    edited = copy.deepcopy(model)

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)

    discover_layout(edited).blocks[layer].register_forward_hook(hook)
    return edited


def _forward_hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --------------------------------------------------------------------------- weight-space forms
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3", "gpt2"])
def test_local_weight_equals_edited_down_proj(arch: str) -> None:
    model = _model(arch)
    layout = discover_layout(model)
    local = build_intervention(LocalWeightOptions(), layout, LAYER)
    _randomise(local)
    edited = copy.deepcopy(model)
    _edit_down_proj(discover_layout(edited), LAYER, 0.7 * local.weight.detach(), 0.7 * local.bias.detach())
    ids = _ids()
    got = _steered_logits(model, [local], 0.7, ids)
    torch.testing.assert_close(got, _logits(edited, ids), atol=1e-5, rtol=0)
    assert (got - _logits(model, ids)).abs().max() > 1e-2, "the edit changed nothing; the test is vacuous"


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
@pytest.mark.parametrize("m", [1.0, -0.6])
def test_lora_equals_scaled_b_a_edit(arch: str, m: float) -> None:
    model = _model(arch)
    layout = discover_layout(model)
    lora = build_intervention(LoRAOptions(rank=3, alpha=7.0), layout, LAYER)
    _randomise(lora, seed=2, scale=0.2)
    a = lora.lora_A.weight.detach().double().numpy()
    b = lora.lora_B.weight.detach().double().numpy()
    delta_w = torch.from_numpy((7.0 / 3.0) * b @ a).float()  # peft scaling alpha / r, alpha != r
    edited = copy.deepcopy(model)
    _edit_down_proj(discover_layout(edited), LAYER, m * delta_w, torch.zeros(layout.hidden_size))
    ids = _ids(seed=1)
    got = _steered_logits(model, [lora], m, ids)
    torch.testing.assert_close(got, _logits(edited, ids), atol=1e-5, rtol=0)
    assert (got - _logits(model, ids)).abs().max() > 1e-2


# --------------------------------------------------------------------------- residual-stream forms
@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_vector_equals_adding_scaled_vector_to_block_output(arch: str) -> None:
    model = _model(arch)
    vector = build_intervention(VectorOptions(), discover_layout(model), LAYER)
    _randomise(vector, scale=0.5)
    v = vector.vector.detach().clone()
    edited = _with_output_hook(model, LAYER, lambda h: h + 1.3 * v)
    ids = _ids(seed=2)
    torch.testing.assert_close(_steered_logits(model, [vector], 1.3, ids), _logits(edited, ids), atol=1e-5, rtol=0)


def _gram_schmidt(rows: np.ndarray) -> np.ndarray:
    """Orthonormalises the rows of ``rows`` in order (float64)."""
    out = []
    for r in rows:
        w = r - sum((r @ q) * q for q in out)
        out.append(w / np.linalg.norm(w))
    return np.stack(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reft_rotation_is_orthonormal_gram_schmidt_of_raw(seed: int) -> None:
    reft = ReFTIntervention(0, hidden_size=64, rank=5)
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(5, 64, generator=g) * 10 + 3.0  # far from orthonormal, not centred
    with torch.no_grad():
        reft.rotate_raw.copy_(raw)
    r = reft.rotation.detach()
    torch.testing.assert_close(r @ r.T, torch.eye(5), atol=1e-5, rtol=0)
    expected = torch.from_numpy(_gram_schmidt(raw.double().numpy())).float()
    torch.testing.assert_close(r, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_reft_equals_hand_lowrank_edit(arch: str) -> None:
    model = _model(arch)
    reft = build_intervention(ReFTOptions(rank=3), discover_layout(model), LAYER)
    _randomise(reft, seed=4, scale=0.3)
    rot = torch.from_numpy(_gram_schmidt(reft.rotate_raw.detach().double().numpy())).float()
    w, b = reft.learned_source.weight.detach().clone(), reft.learned_source.bias.detach().clone()
    m = -1.7
    edited = _with_output_hook(model, LAYER, lambda h: h + m * ((h @ w.T + b - h @ rot.T) @ rot))
    ids = _ids(seed=3)
    got = _steered_logits(model, [reft], m, ids)
    torch.testing.assert_close(got, _logits(edited, ids), atol=2e-5, rtol=0)
    assert (got - _logits(model, ids)).abs().max() > 1e-2


# --------------------------------------------------------------------------- multipliers and hooks
@pytest.mark.parametrize("form", FORMS)
def test_per_example_multipliers_equal_single_runs(form: str) -> None:
    model = _model("llama")
    control = build_control(form_options(form), discover_layout(model), [1])
    _randomise(control, seed=5, scale=0.2)
    ids = _ids(rows=3, seed=4)
    m = torch.tensor([0.0, 1.0, -2.0])
    batched = _steered_logits(model, control, m, ids)
    assert torch.equal(batched[0], _logits(model, ids)[0]), "m = 0 must leave its row bit for bit unchanged"
    for i in range(3):
        single = _steered_logits(model, control, torch.tensor([float(m[i])]), ids[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=0)
    assert (batched[2] - batched[1]).abs().max() > 1e-2


def test_hooks_removed_on_exit_and_on_exception() -> None:
    model = _model("gemma3")
    layout = discover_layout(model)
    control = build_control(LoRAOptions(rank=2), layout, [1, 3])
    _randomise(control, seed=6, scale=0.3)
    ids = _ids(rows=3, seed=5)
    base = _logits(model, ids)
    before = _forward_hook_count(model)
    assert before == 0
    with steer(layout, control, 1.0):
        assert _forward_hook_count(model) == 3  # one per intervention + the decoder pass counter
        assert not torch.equal(_logits(model, ids), base)
    assert _forward_hook_count(model) == 0 and torch.equal(_logits(model, ids), base)

    with pytest.raises(RuntimeError, match="boom"):
        with steer(layout, control, 1.0):
            _logits(model, ids)
            raise RuntimeError("boom")
    assert _forward_hook_count(model) == 0 and torch.equal(_logits(model, ids), base)

    with pytest.raises(ValueError, match="2 multipliers for a batch of 3"):  # raised inside the forward
        with steer(layout, control, torch.tensor([1.0, 2.0])):
            _logits(model, ids)
    assert _forward_hook_count(model) == 0 and torch.equal(_logits(model, ids), base)


# --------------------------------------------------------------------------- positions
def _segments() -> torch.Tensor:
    """Two rows: 4 prompt + 6 completion tokens, 6 prompt + 4 completion tokens."""
    return torch.tensor([[0] * 4 + [1] * 6, [0] * 6 + [1] * 4])


@pytest.mark.parametrize("positions", ["completion", "prompt"])
@pytest.mark.parametrize("form", ["vector", "local_weight"])
def test_only_masked_positions_are_steered(positions: str, form: str) -> None:
    model = _model("llama")
    layout = discover_layout(model)
    control = build_control(form_options(form), layout, [LAYER])
    _randomise(control, seed=7, scale=0.5)
    ids, segments = _ids(rows=2, length=10, seed=6), _segments()
    mask = token_mask_for(segments, positions)
    assert mask is not None
    seen: list[torch.Tensor] = []

    def capture(module: nn.Module, args: Any, output: Any) -> None:
        seen.append((output[0] if isinstance(output, tuple) else output).detach().clone())

    block = layout.blocks[LAYER]
    with steer(layout, control, 1.0, token_mask=mask, generated_value=generated_value_for(positions)):
        handle = block.register_forward_hook(capture)  # runs after the steering hook: sees its result
        try:
            steered_logits = _logits(model, ids)
        finally:
            handle.remove()
    handle = block.register_forward_hook(capture)
    try:
        base_logits = _logits(model, ids)
    finally:
        handle.remove()
    steered_h, base_h = seen
    changed = (steered_h - base_h).abs().amax(-1) > 1e-4
    assert torch.equal(changed, mask.bool()), "block output changed exactly at the masked positions"
    assert torch.equal(steered_h[~mask.bool()], base_h[~mask.bool()])
    if positions == "completion":  # causal: the prompt's logits cannot see the completion's steering
        prompt = segments == 0
        assert torch.equal(steered_logits[prompt], base_logits[prompt])
        assert bool(((steered_logits - base_logits).abs().amax(-1) > 1e-4)[~prompt].all())


@pytest.mark.parametrize("positions", ["prompt", "completion", "all"])
def test_cached_generation_follows_generated_value(positions: str) -> None:
    """Greedy ``generate`` (KV cache) under steering equals a cache-free loop with the full mask each step."""
    model = _model("llama")
    layout = discover_layout(model)
    vector = build_intervention(VectorOptions(), layout, 1)
    _randomise(vector, seed=8, scale=1.0)
    ids, new = _ids(rows=2, length=7, seed=7), 8
    prompt_mask = token_mask_for(torch.zeros_like(ids), positions)
    gen_value = generated_value_for(positions)
    kwargs = dict(max_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=None,
                  return_dict_in_generate=True, output_logits=True)  # fmt: skip
    with torch.no_grad(), steer(layout, [vector], 2.0, token_mask=prompt_mask, generated_value=gen_value):
        out = model.generate(ids, **kwargs)

    seq, step_logits = ids, []
    for t in range(new):
        full = None
        if prompt_mask is not None:
            full = torch.cat([prompt_mask, torch.full((2, t), gen_value)], dim=1)
        last = _steered_logits(model, [vector], 2.0, seq, token_mask=full)[:, -1]
        step_logits.append(last)
        seq = torch.cat([seq, last.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out.sequences, seq)
    for cached, plain in zip(out.logits, step_logits):
        torch.testing.assert_close(cached, plain, atol=1e-4, rtol=0)
    with torch.no_grad():
        unsteered = model.generate(ids, **kwargs)
    assert max((a - b).abs().max() for a, b in zip(out.logits, unsteered.logits)) > 1e-2
    if positions != "all":  # the generated tokens' mask value matters: steering them too differs
        everywhere = _steered_logits(model, [vector], 2.0, seq[:, :-1])[:, ids.shape[1] - 1 :]
        assert (torch.stack(step_logits, 1) - everywhere).abs().max() > 1e-2


# --------------------------------------------------------------------------- full block
@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_full_block_at_one_equals_replaced_block(arch: str) -> None:
    model = _model(arch)
    layout = discover_layout(model)
    full = build_intervention(FullBlockOptions(), layout, LAYER)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in full.block.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    replaced = copy.deepcopy(model)
    discover_layout(replaced).blocks[LAYER] = copy.deepcopy(full.block)

    ids = _ids(rows=2, length=10, seed=8)  # longer than Gemma's sliding window (8)
    got = _steered_logits(model, [full], 1.0, ids)
    torch.testing.assert_close(got, _logits(replaced, ids), atol=1e-5, rtol=0)
    assert (got - _logits(model, ids)).abs().max() > 1e-2

    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None,
                  return_dict_in_generate=True, output_logits=True)  # fmt: skip
    with torch.no_grad():
        want = replaced.generate(ids, **kwargs)
        for _ in range(2):  # a second generation must start a fresh private cache
            with steer(layout, [full], 1.0):
                out = model.generate(ids, **kwargs)
            assert torch.equal(out.sequences, want.sequences)
            for a, b in zip(out.logits, want.logits):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
