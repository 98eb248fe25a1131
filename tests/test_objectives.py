"""Objectives equal the SPEC §4 formulas computed by hand; the modules feed them the right passes.

The formulas are re-derived here with NumPy in float64 from the per-token log-probabilities, never through
the library's helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from lightning_split import DiffMeanSteering, SteeringModule
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.engine import PairLogProbs, plain_pair_logprobs
from lightning_split.interventions import LoRAIntervention, LoRAOptions, VectorIntervention, VectorOptions
from lightning_split.objectives.base import ADD, SUB, SUB_ABLATE
from lightning_split.objectives.dpo import DPO
from lightning_split.objectives.reps import RePS
from lightning_split.objectives.sft import SFT
from lightning_split.objectives.split import SPLIT
from tests.conftest import count_calls
from tests.pair_batches import random_pair_batch
from tests.tiny_models import make_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

# Three pairs with ragged completions (log-probabilities are 0 at padding, as the engine returns them).
POS = [[-0.5, -1.2, -0.3, 0.0], [-2.0, -0.1, 0.0, 0.0], [-0.7, -0.9, -1.1, -0.4]]
POS_MASK = [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
NEG = [[-1.5, -0.2, 0.0], [-0.3, 0.0, 0.0], [-2.5, -1.0, -3.0]]
NEG_MASK = [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
REF_POS = [[-0.4, -1.0, -0.2, 0.0], [-2.5, -0.6, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0]]
REF_NEG = [[-2.0, -0.5, 0.0], [-0.1, 0.0, 0.0], [-2.0, -2.0, -2.0]]


def _lp(pos: list, neg: list, pos_mask: list = POS_MASK, neg_mask: list = NEG_MASK) -> PairLogProbs:
    return PairLogProbs(torch.tensor(pos), torch.tensor(neg), torch.tensor(pos_mask), torch.tensor(neg_mask))


def _arrays(lp: PairLogProbs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pos, neg, pos_mask, neg_mask) as float64 arrays."""
    return tuple(t.detach().double().numpy() for t in (lp.pos, lp.neg, lp.pos_mask, lp.neg_mask))  # type: ignore


def _mean_ce(logp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return -(logp * mask).sum(1) / mask.sum(1)


def _neg_log_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, -x)


def split_np(lp: PairLogProbs, ref: PairLogProbs | None, lp_w: float, ln: float, gamma: float, theta: float,
             lr: float) -> np.ndarray:  # fmt: skip
    """SPEC §4 SPLIT per example: λ_p·CE_p + λ_n·CE_n + γ·ReLU(θ − (CE_n − CE_p)) [+ λ_r·reference hinge]."""
    pos, neg, pm, nm = _arrays(lp)
    ce_p, ce_n = _mean_ce(pos, pm), _mean_ce(neg, nm)
    loss = lp_w * ce_p + ln * ce_n + gamma * np.maximum(0.0, theta - (ce_n - ce_p))
    if lr > 0:
        rpos, rneg, _, _ = _arrays(ref)
        loss += lr * (np.maximum(0.0, ce_p - _mean_ce(rpos, pm)) + np.maximum(0.0, ce_n - _mean_ce(rneg, nm)))
    return loss


def reps_np(lp: PairLogProbs, ref: PairLogProbs, floor: float = 1.0) -> np.ndarray:
    """SPEC §4 RePS: −log σ(β·logp(A_p)/|A_p| − logp(A_n)/|A_n|), β = max(logp_ref(A_n) − logp_ref(A_p), 1)."""
    pos, neg, pm, nm = _arrays(lp)
    rpos, rneg, _, _ = _arrays(ref)
    beta = np.maximum(rneg.sum(1) - rpos.sum(1), floor)
    return _neg_log_sigmoid(beta * pos.sum(1) / pm.sum(1) - neg.sum(1) / nm.sum(1))


def dpo_np(lp: PairLogProbs, ref: PairLogProbs, beta: float) -> np.ndarray:
    pos, neg, _, _ = _arrays(lp)
    rpos, rneg, _, _ = _arrays(ref)
    return _neg_log_sigmoid(beta * ((pos.sum(1) - rpos.sum(1)) - (neg.sum(1) - rneg.sum(1))))


# --------------------------------------------------------------------------- formulas
def test_sft_is_mean_token_ce_of_target() -> None:
    lp = _lp(POS, NEG)
    terms = SFT().pass_loss(lp, None)
    want = _mean_ce(*_arrays(lp)[::2])
    np.testing.assert_allclose(terms["loss"].numpy(), want, rtol=1e-6)
    swapped = SFT().pass_loss(lp.swapped(), None)["loss"].numpy()
    np.testing.assert_allclose(swapped, _mean_ce(_arrays(lp)[1], _arrays(lp)[3]), rtol=1e-6)
    loss, _ = SFT()([lp, lp.swapped()], None)
    assert float(loss) == pytest.approx(np.concatenate([want, swapped]).mean(), rel=1e-6)


@pytest.mark.parametrize("lambda_ref", [0.0, 0.8])
def test_split_matches_formula(lambda_ref: float) -> None:
    lp, ref = _lp(POS, NEG), _lp(REF_POS, REF_NEG)
    settings = dict(lambda_p=1.0, lambda_n=0.4, gamma=6.0, theta=0.5)
    objective = SPLIT(**settings, lambda_ref=lambda_ref)
    assert objective.needs_reference is (lambda_ref > 0)
    got = objective.pass_loss(lp, ref if lambda_ref else None)
    want = split_np(lp, ref, 1.0, 0.4, 6.0, 0.5, lambda_ref)
    np.testing.assert_allclose(got["loss"].numpy(), want, rtol=1e-6)
    hinge = got["margin"].numpy()
    assert (hinge > 0).any() and (hinge == 0).any(), "the batch must exercise both sides of the hinge"
    if lambda_ref:
        assert (got["ref"].numpy() > 0).all() and not np.allclose(want, split_np(lp, ref, 1, 0.4, 6, 0.5, 0))
    # two passes: the mean over both passes and all examples
    sub, sub_ref = lp.swapped(), ref.swapped()
    loss, logs = objective([lp, sub], [ref, sub_ref] if lambda_ref else None)
    both = np.concatenate([want, split_np(sub, sub_ref, 1.0, 0.4, 6.0, 0.5, lambda_ref)])
    assert float(loss) == pytest.approx(both.mean(), rel=1e-6)


def test_split_with_reference_weight_requires_reference() -> None:
    with pytest.raises(ValueError, match="reference"):
        SPLIT(lambda_ref=0.5).pass_loss(_lp(POS, NEG), None)


def test_reps_matches_formula_and_uses_projection_out_for_vectors() -> None:
    lp, ref = _lp(POS, NEG), _lp(REF_POS, REF_NEG)
    got = RePS().pass_loss(lp, ref)
    np.testing.assert_allclose(got["loss"].numpy(), reps_np(lp, ref), rtol=1e-6)
    np.testing.assert_allclose(got["beta"].numpy(), [1.0, 3.0, 1.0], rtol=1e-6)  # floor and reference regimes
    np.testing.assert_allclose(RePS(beta_floor=2.0).pass_loss(lp, ref)["loss"].numpy(), reps_np(lp, ref, 2.0),
                               rtol=1e-6)  # fmt: skip
    assert RePS().needs_reference
    assert RePS().passes(VectorIntervention) == (ADD, SUB_ABLATE) and SUB_ABLATE.ablate and SUB_ABLATE.sign == 0
    assert RePS().passes(LoRAIntervention) == (ADD, SUB)
    assert RePS(bidirectional=False).passes(VectorIntervention) == (ADD,)


@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_dpo_matches_formula(beta: float) -> None:
    lp, ref = _lp(POS, NEG), _lp(REF_POS, REF_NEG)
    got = DPO(beta=beta).pass_loss(lp, ref)["loss"].numpy()
    np.testing.assert_allclose(got, dpo_np(lp, ref, beta), rtol=1e-6)
    assert DPO().needs_reference and DPO().passes(VectorIntervention) == (ADD, SUB)


# --------------------------------------------------------------------------- multiplier draws
def test_draw_multipliers_deterministic_and_from_grid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    make_tiny_model("llama").config.save_pretrained(tmp_path)  # the module reads only the config; never loaded
    module = SteeringModule(backbone=str(tmp_path), training={"multipliers": [2.0, 4.0, 6.0, 8.0, 10.0]})
    index = torch.arange(200)
    first = module.draw_multipliers(index, 0)
    torch.manual_seed(1234)  # the RNG state must not matter
    assert torch.equal(first, module.draw_multipliers(index, 0))
    subset = torch.tensor([17, 3, 150, 0])
    assert torch.equal(module.draw_multipliers(subset, 0), first[subset]), "independent of batch composition"
    assert set(first.tolist()) == {2.0, 4.0, 6.0, 8.0, 10.0}
    counts = np.bincount(((first.numpy() / 2) - 1).astype(int), minlength=5)
    assert counts.min() >= 20, f"draws far from uniform over the grid: {counts}"
    other_pass = module.draw_multipliers(index, 1)
    assert set(other_pass.tolist()) <= {2.0, 4.0, 6.0, 8.0, 10.0}
    assert (other_pass != first).float().mean() > 0.5
    monkeypatch.setattr(SteeringModule, "current_epoch", property(lambda self: 3))
    later = module.draw_multipliers(index, 0)
    assert torch.equal(later[subset], module.draw_multipliers(subset, 0))
    assert (later != first).float().mean() > 0.5


# --------------------------------------------------------------------------- modules on a tiny backbone
def _module(cls: type, backbone_dir: Path, **kwargs: Any) -> Any:
    module = cls(backbone=str(backbone_dir), layer=1, **kwargs)
    module.configure_model()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.control.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


@pytest.mark.parametrize("lambda_ref", [0.0, 0.7])
def test_split_module_step_matches_plain_passes(
    lambda_ref: float, tiny_backbone_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objective = SPLIT(lambda_n=0.4, gamma=6.0, theta=0.5, lambda_ref=lambda_ref)
    module = _module(SteeringModule, tiny_backbone_dir, form=LoRAOptions(), objective=objective)
    batch = random_pair_batch(rows=3, seed=11)
    reference_calls = count_calls(monkeypatch, module, "reference")
    cache_calls = count_calls(monkeypatch, module._reference_cache, "logprobs")
    forwards = [0]
    handle = module.layout.decoder.register_forward_pre_hook(lambda *a: forwards.__setitem__(0, forwards[0] + 1))
    try:
        loss = module.training_step(batch, 0)
    finally:
        handle.remove()
    if lambda_ref == 0:
        assert reference_calls == [0] and cache_calls == [0] and len(module._reference_cache) == 0
        assert forwards == [2], "lower blocks once + one packed steered pass, no unsteered pass"
    else:
        assert reference_calls == [1] and len(module._reference_cache) == 3
        assert forwards == [3]

    model, layout, control = module.backbone, module.layout, module.control
    m_add, m_sub = module.draw_multipliers(batch.index, 0), -module.draw_multipliers(batch.index, 1)
    with torch.no_grad():
        add = plain_pair_logprobs(model, layout, batch, control, m_add)
        sub = plain_pair_logprobs(model, layout, batch.swapped(), control, m_sub)
        ref = plain_pair_logprobs(model, layout, batch)
    per = [split_np(add, ref, 1.0, 0.4, 6.0, 0.5, lambda_ref),
           split_np(sub, ref.swapped(), 1.0, 0.4, 6.0, 0.5, lambda_ref)]  # fmt: skip
    assert float(loss) == pytest.approx(np.concatenate(per).mean(), rel=1e-6, abs=1e-5)


def test_reps_vector_step_projects_out_on_sub_pass(tiny_backbone_dir: Path) -> None:
    module = _module(SteeringModule, tiny_backbone_dir, form=VectorOptions(), objective=RePS())
    batch = random_pair_batch(rows=3, seed=12)
    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    score_packed = module.scorer.score_packed

    def spy(packed: Any, interventions: Any, multiplier: Any, positions: Any, lower: Any, ablate: Any) -> Any:
        seen.append((multiplier.clone(), None if ablate is None else ablate.clone()))
        return score_packed(packed, interventions, multiplier, positions, lower, ablate)

    module.scorer.score_packed = spy
    loss = module.training_step(batch, 0)
    (m, ablate), (m_ref, ablate_ref) = seen  # the steered passes, then the unsteered reference
    assert ablate is not None and ablate.tolist() == [False] * 3 + [True] * 3
    assert torch.equal(m[:3], module.draw_multipliers(batch.index, 0)) and torch.equal(m[3:], torch.zeros(3))
    assert ablate_ref is None and torch.equal(m_ref, torch.zeros(3))

    model, layout, control = module.backbone, module.layout, module.control
    v = control[0].vector.detach().clone()

    def project_out(block: nn.Module, args: Any, output: Any) -> Any:
        h = output[0] if isinstance(output, tuple) else output
        new = h - torch.relu(h @ v).unsqueeze(-1) / (v @ v) * v
        return (new, *output[1:]) if isinstance(output, tuple) else new

    with torch.no_grad():
        add = plain_pair_logprobs(model, layout, batch, control, module.draw_multipliers(batch.index, 0))
        ref = plain_pair_logprobs(model, layout, batch)
        handle = layout.blocks[1].register_forward_hook(project_out)
        try:
            sub = plain_pair_logprobs(model, layout, batch.swapped())
        finally:
            handle.remove()
    want = np.concatenate([reps_np(add, ref), reps_np(sub, ref.swapped())]).mean()
    assert float(loss) == pytest.approx(want, rel=1e-6, abs=1e-5)


def test_diffmean_vector_equals_mean_residual_difference(
    tiny_backbone_dir: Path, sentiment_like_jsonl: Path, tmp_path: Path
) -> None:
    layer = 1
    module = DiffMeanSteering(backbone=str(tiny_backbone_dir), layer=layer)
    data = PolarityDataModule(dataset=str(sentiment_like_jsonl), batch_size=3)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        limit_val_batches=0, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, datamodule=data)
    vector = module.control[0].vector.detach().double()

    diffs = []
    with torch.no_grad():
        for pair in data.tokenized("train"):
            means = []
            for completion in (pair.pos_ids, pair.neg_ids):
                ids = torch.tensor([pair.prompt_ids + completion])
                states = module.backbone(ids, output_hidden_states=True, use_cache=False).hidden_states
                means.append(states[layer + 1][0, len(pair.prompt_ids) :].double().mean(0))  # after block L
            diffs.append(means[0] - means[1])
    assert len(diffs) == 10
    expected = torch.stack(diffs).mean(0)
    assert expected.norm() > 1e-2
    torch.testing.assert_close(vector, expected, atol=1e-5, rtol=1e-5)
