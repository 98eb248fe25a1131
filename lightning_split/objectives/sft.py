"""Bidirectional SFT: ``CE(A_p | +m)``, plus ``CE(A_n | −m)`` on "sub" passes."""

from __future__ import annotations

import torch

from ..engine import PairLogProbs
from .base import Objective, win_ce


class SFT(Objective):
    """Supervised fine-tuning of the control on the target completion of each pass.

    Args:
        bidirectional: also train ``A_n`` at ``−m`` (the released SFT baseline does).
    """

    name = "sft"

    def pass_loss(self, steered: PairLogProbs, reference: PairLogProbs | None) -> dict[str, torch.Tensor]:
        ce = win_ce(steered)
        return {"loss": ce, "ce_win": ce}
