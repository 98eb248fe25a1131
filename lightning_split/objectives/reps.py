"""RePS (scaled SimPO): ``−log σ(β·logp(A_w)/|A_w| − logp(A_l)/|A_l|)`` with ``β`` from the base model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine import PairLogProbs
from ..interventions.base import Intervention
from .base import ADD, SUB, SUB_ABLATE, Objective, Pass


class RePS(Objective):
    """Reference-scaled preference objective of RePS (Wu et al., 2025).

    ``β = max(logp_ref(A_l) − logp_ref(A_w), 1)`` uses the unsteered model's summed log-likelihoods;
    lengths are completion lengths. For a form with a single direction (``has_direction``, the vector) the
    "sub" pass projects it out of the residual stream instead of negating it (null-it-out).

    Args:
        bidirectional: also train the swapped pair.
        beta_floor: lower bound of ``β``.
    """

    name = "reps"

    def __init__(self, bidirectional: bool = True, beta_floor: float = 1.0) -> None:
        super().__init__(bidirectional)
        self.beta_floor = float(beta_floor)

    @property
    def needs_reference(self) -> bool:
        return True

    def passes(self, form: type[Intervention]) -> tuple[Pass, ...]:
        if not self.bidirectional:
            return (ADD,)
        return (ADD, SUB_ABLATE if form.has_direction else SUB)

    def pass_loss(self, steered: PairLogProbs, reference: PairLogProbs | None) -> dict[str, torch.Tensor]:
        if reference is None:
            raise ValueError("RePS needs the reference log-likelihoods")
        beta = (reference.logp_neg - reference.logp_pos).clamp_min(self.beta_floor).detach()
        margin = beta * steered.logp_pos / steered.len_pos - steered.logp_neg / steered.len_neg
        loss = -F.logsigmoid(margin)
        return {"loss": loss, "margin": margin, "beta": beta}
