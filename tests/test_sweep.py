"""The multiplier sweep equals the plain loop (full forward per completion and m) on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_split.data.batch import PairBatch
from lightning_split.engine import PairScorer, plain_pair_logprobs
from lightning_split.interventions import build_control, form_options
from lightning_split.layout import discover_layout
from lightning_split.metrics import pair_nll, preference_log_odds, utility_log_odds
from lightning_split.sweep import (
    curve_from_losses,
    default_chunk,
    plain_sweep,
    plain_sweep_losses,
    sweep,
    sweep_losses,
)
from tests.pair_batches import random_pair_batch
from tests.tiny_models import make_tiny_model

GRID = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise(control: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in control.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _batches(count: int = 3, rows: int = 3) -> list[PairBatch]:
    out = []
    for k in range(count):
        batch = random_pair_batch(rows=rows, seed=10 + k)
        batch.index = torch.arange(k * rows, (k + 1) * rows)
        out.append(batch)
    return out


def _setup(arch: str, form: str, layer: int = 2):
    model = make_tiny_model(arch)
    layout = discover_layout(model)
    control = build_control(form_options(form), layout, [layer])
    _randomise(control)
    return model, layout, control, PairScorer(model, layout)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
@pytest.mark.parametrize("form", ["vector", "lora", "local_weight", "reft"])
def test_sweep_equals_plain_loop(arch: str, form: str) -> None:
    model, layout, control, scorer = _setup(arch, form)
    assert scorer.reuse_lower  # the sweep runs the lower-reusing path on every architecture
    batches = _batches()
    positions = "completion" if form == "lora" else "all"
    plain = plain_sweep_losses(scorer, control, batches, GRID, positions, "mean")
    for chunk in (None, 1, 3):  # all 7 multipliers in one pass, one per pass, 3+3+1
        fast = sweep_losses(scorer, control, batches, GRID, positions, "mean", chunk_multipliers=chunk, progress=False)
        np.testing.assert_allclose(fast.l_pos.numpy(), plain.l_pos.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(fast.l_neg.numpy(), plain.l_neg.numpy(), atol=1e-5, rtol=0)
        assert torch.equal(fast.index, torch.arange(9))
    moved = (fast.l_pos[GRID.index(2.0)] - fast.l_pos[GRID.index(0.0)]).abs().max()
    assert moved > 1e-3, "the random control changed nothing"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_curves_agree_and_hold_per_pair_arrays(reduction: str) -> None:
    model, layout, control, scorer = _setup("llama", "vector", layer=1)
    batches = _batches(count=2, rows=4)
    grid = [1.0, -1.0, 0.0, 2.0]  # unsorted on purpose: the curve sorts it
    fast = sweep(scorer, control, batches, grid, reduction=reduction, max_rows=6, progress=False, split="test")
    plain = plain_sweep(scorer, control, batches, grid, reduction=reduction, split="test")
    assert fast.multipliers == [-1.0, 0.0, 1.0, 2.0]
    assert fast.reduction == reduction and fast.split == "test"
    assert fast.n_pairs == [8] * 4
    assert fast.pair_preference.shape == (4, 8) and fast.pair_utility.shape == (4, 8)
    for name in ("preference", "utility", "accuracy"):
        np.testing.assert_allclose(getattr(fast, name), getattr(plain, name), atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast.pair_preference, plain.pair_preference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast.pair_utility, plain.pair_utility, atol=1e-5, rtol=0)
    assert fast.clamped == plain.clamped
    assert fast.anti_steerable[fast.zero_index] is None
    np.testing.assert_allclose(np.mean(fast.pair_preference, axis=1), fast.preference, rtol=1e-12)


def test_zero_row_is_the_base_model() -> None:
    model, layout, control, scorer = _setup("llama", "lora")
    batches = _batches(count=2)
    curve = sweep(scorer, control, batches, GRID, reduction="sum", progress=False)
    pref, util = [], []
    for batch in batches:
        base = plain_pair_logprobs(model, layout, batch)  # no control at all
        l_pos, l_neg = pair_nll(base.logp_pos, reduction="sum"), pair_nll(base.logp_neg, reduction="sum")
        pref.append(preference_log_odds(l_pos, l_neg))
        util.append(utility_log_odds(l_pos, l_neg)[0])
    zero = curve.zero_index
    np.testing.assert_allclose(curve.pair_preference[zero], torch.cat(pref).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(curve.pair_utility[zero], torch.cat(util).numpy(), atol=1e-5, rtol=0)
    # and the packed engine without any control gives the m = 0 row bit for bit
    unsteered = sweep_losses(scorer, [], batches, [0.0], reduction="sum", progress=False)
    steered = sweep_losses(scorer, control, batches, GRID, reduction="sum", progress=False)
    assert torch.equal(unsteered.l_pos[0], steered.l_pos[GRID.index(0.0)])
    assert torch.equal(unsteered.l_neg[0], steered.l_neg[GRID.index(0.0)])


def test_metrics_are_the_functional_formulas() -> None:
    model, layout, control, scorer = _setup("llama", "vector", layer=1)
    losses = sweep_losses(scorer, control, _batches(), GRID, reduction="mean", progress=False)
    curve = curve_from_losses(losses)
    assert losses.l_pos.dtype == torch.float64 and losses.l_pos.shape == (len(GRID), 9)
    for row, m in enumerate(GRID):
        i = curve.multipliers.index(m)
        pref = (losses.l_neg[row] - losses.l_pos[row]).numpy()
        assert curve.preference[i] == pytest.approx(pref.mean(), abs=1e-12)
        assert curve.accuracy[i] == pytest.approx((pref > 0).mean())
        base = (losses.l_neg[GRID.index(0.0)] - losses.l_pos[GRID.index(0.0)]).numpy()
        if m != 0:
            wrong = (pref - base) * np.sign(m) < 0
            assert curve.anti_steerable[i] == pytest.approx(wrong.mean())


def test_progress_bar_and_generator_input() -> None:
    model, layout, control, scorer = _setup("llama", "vector", layer=1)
    batches = _batches(count=2)
    with_bar = sweep_losses(scorer, control, iter(batches), [0.0, 1.0], progress=True)
    without = sweep_losses(scorer, control, batches, [0.0, 1.0], progress=False)
    assert torch.equal(with_bar.l_pos, without.l_pos)


def test_control_mode_is_restored() -> None:
    model, layout, control, scorer = _setup("llama", "lora")
    control.train()
    sweep_losses(scorer, control, _batches(count=1), [0.0, 1.0], progress=False)
    assert all(module.training for module in control.modules())


def test_default_chunk_and_bad_grids() -> None:
    assert default_chunk(8, 11, 64) == 8
    assert default_chunk(4, 11, 64) == 11
    assert default_chunk(100, 11, 64) == 1
    model, layout, control, scorer = _setup("llama", "vector", layer=1)
    with pytest.raises(ValueError, match="contain 0"):
        sweep(scorer, control, _batches(count=1), [1.0, 2.0], progress=False)
    with pytest.raises(ValueError, match="duplicate"):
        sweep_losses(scorer, control, _batches(count=1), [0.0, 1.0, 1.0], progress=False)
    with pytest.raises(ValueError, match="no pairs"):
        sweep_losses(scorer, control, [], [0.0, 1.0], progress=False)
