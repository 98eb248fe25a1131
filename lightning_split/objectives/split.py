"""SPLIT: ``λ_p·CE(A_p) + λ_n·CE(A_n) + γ·ReLU(θ − (CE(A_n) − CE(A_p)))`` with the control on."""

from __future__ import annotations

import torch

from ..engine import PairLogProbs
from .base import Objective, lose_ce, win_ce


class SPLIT(Objective):
    """The paper's preference–utility objective (Eq. 18–20), per example.

    The two CE terms keep both completions likely (utility); the hinge pushes the preference gap
    ``CE(A_n) − CE(A_p)`` (= PrefOdds in per-token units) above ``θ``. The optional reference term
    ``λ_r·(ReLU(CE_p − CE_p^ref) + ReLU(CE_n − CE_n^ref))`` is computed only when ``λ_r > 0``.

    Args:
        lambda_p: weight of the target completion's CE.
        lambda_n: weight of the other completion's CE.
        gamma: weight of the margin hinge.
        theta: margin in nats per token.
        lambda_ref: weight of the reference hinge (0: off, and the unsteered pass is never run).
        bidirectional: also train the swapped pair at ``−m``.
    """

    name = "split"

    def __init__(
        self,
        lambda_p: float = 1.0,
        lambda_n: float = 0.5,
        gamma: float = 5.0,
        theta: float = 0.5,
        lambda_ref: float = 0.0,
        bidirectional: bool = True,
    ) -> None:
        super().__init__(bidirectional)
        self.lambda_p, self.lambda_n = float(lambda_p), float(lambda_n)
        self.gamma, self.theta, self.lambda_ref = float(gamma), float(theta), float(lambda_ref)

    @property
    def needs_reference(self) -> bool:
        return self.lambda_ref > 0

    def pass_loss(self, steered: PairLogProbs, reference: PairLogProbs | None) -> dict[str, torch.Tensor]:
        ce_w, ce_l = win_ce(steered), lose_ce(steered)
        hinge = torch.relu(self.theta - (ce_l - ce_w))
        loss = self.lambda_p * ce_w + self.lambda_n * ce_l + self.gamma * hinge
        terms = {"ce_win": ce_w, "ce_lose": ce_l, "margin": hinge}
        if self.lambda_ref > 0:
            if reference is None:
                raise ValueError("SPLIT with lambda_ref > 0 needs the reference log-likelihoods")
            ref_term = torch.relu(ce_w - win_ce(reference).detach()) + torch.relu(ce_l - lose_ce(reference).detach())
            loss = loss + self.lambda_ref * ref_term
            terms["ref"] = ref_term
        return {"loss": loss, **terms}
