"""DPO / BiPO-style objective with the unsteered model as reference (the paper's appendix baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine import PairLogProbs
from .base import Objective


class DPO(Objective):
    """``−log σ(β·[(logp(A_w) − logp_ref(A_w)) − (logp(A_l) − logp_ref(A_l))])``.

    With ``bidirectional`` (BiPO) the swapped pair is trained at ``−m``.

    Args:
        beta: DPO temperature.
        bidirectional: also train the swapped pair.
    """

    name = "dpo"

    def __init__(self, beta: float = 0.1, bidirectional: bool = True) -> None:
        super().__init__(bidirectional)
        self.beta = float(beta)

    @property
    def needs_reference(self) -> bool:
        return True

    def pass_loss(self, steered: PairLogProbs, reference: PairLogProbs | None) -> dict[str, torch.Tensor]:
        if reference is None:
            raise ValueError("DPO needs the reference log-likelihoods")
        win = steered.logp_pos - reference.logp_pos.detach()
        lose = steered.logp_neg - reference.logp_neg.detach()
        margin = self.beta * (win - lose)
        return {"loss": -F.logsigmoid(margin), "margin": margin}
