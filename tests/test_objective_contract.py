"""The objective contract, one suite for every registered objective (as peft tests all its methods alike).

Each objective in :data:`CASES` must: give a finite scalar loss equal to its formula recomputed with NumPy
(:data:`NUMPY_LOSS`) on a fixed batch, send gradients to the control only (never to the reference
log-likelihoods), average per example so that the loss of a batch is the mean of the losses of its two halves
(what DDP's gradient averaging assumes), ask for the reference exactly when it uses it, choose passes from the
form's capabilities, and rebuild from its recorded ``init_args`` (checkpoints, saved controls, configs).

Adding an objective: add its cases and its NumPy formula here (``test_every_shipped_objective_is_covered``
fails until then).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jsonargparse import ArgumentParser

from docs.examples.hinge_objective import Hinge
from lightning_split import SteeringModule
from lightning_split.engine import PairLogProbs
from lightning_split.interventions import FORMS, form_class
from lightning_split.objectives import DPO, OBJECTIVES, SFT, SPLIT, Objective, Pass, RePS
from tests.test_objectives import _arrays, _mean_ce, dpo_np, reps_np, split_np

CASES: dict[str, list[Objective]] = {
    "split": [SPLIT(lambda_n=0.4, gamma=6.0, theta=0.5), SPLIT(lambda_ref=0.7, bidirectional=False)],
    "sft": [SFT(), SFT(bidirectional=False)],
    "reps": [RePS(), RePS(beta_floor=2.0)],
    "dpo": [DPO(beta=0.5), DPO(beta=2.0, bidirectional=False)],
    "hinge": [Hinge(margin=0.8)],  # docs/examples/hinge_objective.py
}


def _sft_np(objective: SFT, lp: PairLogProbs, ref: PairLogProbs | None) -> np.ndarray:
    pos, _, pm, _ = _arrays(lp)
    return _mean_ce(pos, pm)


def _hinge_np(objective: Hinge, lp: PairLogProbs, ref: PairLogProbs | None) -> np.ndarray:
    pos, neg, pm, nm = _arrays(lp)
    return np.maximum(0.0, objective.margin - (_mean_ce(neg, nm) - _mean_ce(pos, pm)))


NUMPY_LOSS: dict[type, Callable[..., np.ndarray]] = {
    SPLIT: lambda o, lp, ref: split_np(lp, ref, o.lambda_p, o.lambda_n, o.gamma, o.theta, o.lambda_ref),
    SFT: _sft_np,
    RePS: lambda o, lp, ref: reps_np(lp, ref, o.beta_floor),
    DPO: lambda o, lp, ref: dpo_np(lp, ref, o.beta),
    Hinge: _hinge_np,
}
ALL = [pytest.param(o, id=f"{name}-{k}") for name, objectives in CASES.items() for k, o in enumerate(objectives)]
ROWS = 6


def _logprobs(raw_pos: torch.Tensor, raw_neg: torch.Tensor, seed: int) -> PairLogProbs:
    """Ragged per-token log-probabilities (0 at padding) from unconstrained scores; ``seed`` fixes the lengths."""
    g = torch.Generator().manual_seed(seed)
    pos_len = torch.randint(1, raw_pos.shape[1] + 1, (ROWS,), generator=g)
    neg_len = torch.randint(1, raw_neg.shape[1] + 1, (ROWS,), generator=g)
    pos_mask = (torch.arange(raw_pos.shape[1]) < pos_len[:, None]).long()
    neg_mask = (torch.arange(raw_neg.shape[1]) < neg_len[:, None]).long()
    return PairLogProbs(-F.softplus(raw_pos) * pos_mask, -F.softplus(raw_neg) * neg_mask, pos_mask, neg_mask)


Passes = tuple[list[PairLogProbs], list[PairLogProbs], list[torch.Tensor]]


def _passes(objective: Objective, control: torch.Tensor) -> Passes:
    """The oriented steered passes (each a function of ``control``) and the reference of each, as the module
    hands them over, and the reference's scores, which require gradients so that a leak into them is seen."""
    passes = objective.passes(form_class("lora"))
    steered, reference, leaves = [], [], []
    for k, p in enumerate(passes):
        g = torch.Generator().manual_seed(100 + k)
        raw_pos, raw_neg = torch.randn(ROWS, 5, generator=g), torch.randn(ROWS, 3, generator=g)
        steered.append(_logprobs(raw_pos + control[0], raw_neg + control[1], seed=k))
        ref_pos, ref_neg = torch.randn(ROWS, 5, generator=g), torch.randn(ROWS, 3, generator=g)
        leaves += [ref_pos.requires_grad_(), ref_neg.requires_grad_()]
        base = _logprobs(ref_pos, ref_neg, seed=k)
        reference.append(base.swapped() if p.swaps else base)
    return steered, reference, leaves


@pytest.mark.parametrize("objective", ALL)
def test_loss_is_finite_and_equals_the_numpy_formula(objective: Objective) -> None:
    steered, reference, _ = _passes(objective, torch.zeros(2))
    loss, logs = objective(steered, reference)
    assert loss.ndim == 0 and torch.isfinite(loss) and all(torch.isfinite(v) for v in logs.values())
    want = np.concatenate([NUMPY_LOSS[type(objective)](objective, s, r) for s, r in zip(steered, reference)])
    assert float(loss) == pytest.approx(want.mean(), rel=1e-6, abs=1e-7)
    assert float(logs["loss"]) == float(loss)


@pytest.mark.parametrize("objective", ALL)
def test_gradients_reach_the_control_and_never_the_reference(objective: Objective) -> None:
    control = torch.tensor([0.3, -0.2], requires_grad=True)
    steered, reference, leaves = _passes(objective, control)
    loss, _ = objective(steered, reference)
    loss.backward()
    assert control.grad is not None and torch.isfinite(control.grad).all() and control.grad.abs().sum() > 0
    assert all(leaf.grad is None or not leaf.grad.any() for leaf in leaves), "gradients reach the reference"


@pytest.mark.parametrize("objective", ALL)
def test_batch_mean_equals_the_mean_of_its_halves(objective: Objective) -> None:
    """Under DDP each rank averages its own rows and the gradients are averaged: that is the global mean only
    when the loss is a plain mean over examples (no batch-level statistic)."""
    steered, reference, _ = _passes(objective, torch.zeros(2))
    whole, whole_logs = objective(steered, reference)
    halves = [slice(0, ROWS // 2), slice(ROWS // 2, ROWS)]
    parts = [objective([s.select(h) for s in steered], [r.select(h) for r in reference]) for h in halves]
    torch.testing.assert_close(whole, (parts[0][0] + parts[1][0]) / 2, atol=1e-6, rtol=1e-6)
    for key, value in whole_logs.items():
        torch.testing.assert_close(value, (parts[0][1][key] + parts[1][1][key]) / 2, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("objective", ALL)
def test_reference_is_asked_for_exactly_when_used(objective: Objective) -> None:
    steered, reference, _ = _passes(objective, torch.zeros(2))
    if objective.needs_reference:
        with pytest.raises(ValueError, match="reference"):
            objective(steered, None)
    else:
        torch.testing.assert_close(objective(steered, None)[0], objective(steered, reference)[0])


@pytest.mark.parametrize("objective", ALL)
@pytest.mark.parametrize("form", FORMS)
def test_passes_follow_the_form_capabilities(objective: Objective, form: str) -> None:
    cls = form_class(form)
    passes = objective.passes(cls)
    assert passes and all(isinstance(p, Pass) for p in passes) and not passes[0].swaps
    assert len(passes) == (2 if objective.bidirectional else 1)
    assert cls.has_direction or not any(p.ablate for p in passes), f"{form} has no direction to project out"


@pytest.mark.parametrize("objective", ALL)
def test_objective_rebuilds_from_its_recorded_arguments(objective: Objective) -> None:
    args = objective.init_args()
    assert type(objective)(**args).init_args() == args
    spec = SteeringModule(objective=objective).hparams["objective"]
    assert spec["init_args"] == args
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--objective", type=Objective)
    built = parser.instantiate(parser.parse_object({"objective": spec})).objective
    assert type(built) is type(objective) and built.init_args() == args


def test_every_shipped_objective_is_covered() -> None:
    assert set(OBJECTIVES) <= set(CASES), f"add cases and a NumPy formula for {set(OBJECTIVES) - set(CASES)}"
    for objectives in CASES.values():
        assert all(type(o) in NUMPY_LOSS for o in objectives)
