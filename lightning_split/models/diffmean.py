"""DiffMean (CAA): the one method that is fitted from statistics of the training pairs, not trained.

Every trained method is :class:`~lightning_split.models.SteeringModule` with an objective. DiffMean has no
loss, no gradient and no optimiser: one epoch sums per-pair activation differences, the ranks add their sums
at the end of the epoch and the mean becomes the vector. That is a different training loop, so it is a
module that overrides Lightning's training hooks rather than an objective (the objective contract is a
differentiable loss over steered passes).
"""

from __future__ import annotations

from typing import Any

import torch

from ..data.batch import PairBatch
from ..interventions import VectorOptions
from .steering_module import SteeringModule


class DiffMeanSteering(SteeringModule):
    """DiffMean (CAA): no training; ``v`` = mean over pairs of (mean answer-token residual of ``A_p`` −
    that of ``A_n``) after block ``layer``. One epoch over the training pairs fits it.

    Args:
        **kwargs: the :class:`SteeringModule` arguments except ``objective``; ``form`` must be a form with a
            single direction (``has_direction``: the vector form, the default, starting from a zero vector).
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("objective") is not None:
            raise ValueError("DiffMean is fitted from the pairs, not trained: remove model.init_args.objective")
        kwargs.setdefault("form", VectorOptions(init_std=0.0))
        super().__init__(**kwargs)
        if not self.form_class.has_direction:
            raise ValueError(f"DiffMean fits one direction; the {self.form} form has none: use VectorOptions")
        self.objective = None
        self.hparams["objective"] = None
        self.automatic_optimization = False

    @property
    def objective_name(self) -> str:
        """``diffmean``."""
        return "diffmean"

    def on_train_epoch_start(self) -> None:
        self._sum: torch.Tensor | None = None
        self._count = torch.zeros((), dtype=torch.float64, device=self.device)

    def training_step(self, batch: PairBatch, batch_idx: int) -> None:
        assert self.scorer is not None
        packed = self.scorer.pack(batch)
        layer = self.control_layers[0]
        hidden = self.scorer.block_outputs(packed, layer).double()
        pos = (packed.segments == 1).unsqueeze(-1).double()
        neg = (packed.segments == 2).unsqueeze(-1).double()
        diff = (hidden * pos).sum(1) / pos.sum(1) - (hidden * neg).sum(1) / neg.sum(1)
        self._sum = diff.sum(0) if self._sum is None else self._sum + diff.sum(0)
        self._count += len(batch)

    def on_train_epoch_end(self) -> None:
        assert self.control is not None
        total = self.trainer.strategy.reduce(self._sum, reduce_op="sum")
        count = self.trainer.strategy.reduce(self._count, reduce_op="sum")
        direction = self.control[0].direction
        with torch.no_grad():
            direction.copy_((total / count).to(direction.dtype))

    def configure_optimizers(self) -> None:
        return None
