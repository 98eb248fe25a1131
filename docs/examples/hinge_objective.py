"""Example objective for docs/extending.md: a pure preference hinge, ``ReLU(margin − (CE(A_l) − CE(A_w)))``.

This file is the whole objective: defining the class registers it under ``name``, and a config selects it with
``objective: {class_path: docs.examples.hinge_objective.Hinge, init_args: {margin: 1.0}}``. Placed in
``lightning_split/objectives/`` instead, it would be imported (and registered) with the package.
``tests/test_objective_contract.py`` runs it through the same contract suite as the shipped objectives.
"""

from __future__ import annotations

import torch

from lightning_split.engine import PairLogProbs
from lightning_split.objectives import Objective
from lightning_split.objectives.base import lose_ce, win_ce


class Hinge(Objective):
    """SPLIT without its utility terms: only the margin hinge on the per-token CE gap.

    Args:
        margin: the gap ``CE(A_l) − CE(A_w)`` in nats per token below which a pair is penalised.
        bidirectional: also train the swapped pair at ``−m``.
    """

    name = "hinge"

    def __init__(self, margin: float = 1.0, bidirectional: bool = True) -> None:
        super().__init__(bidirectional)
        self.margin = float(margin)

    def pass_loss(self, steered: PairLogProbs, reference: PairLogProbs | None) -> dict[str, torch.Tensor]:
        gap = lose_ce(steered) - win_ce(steered)
        return {"loss": torch.relu(self.margin - gap), "gap": gap}
