"""The named methods: one LightningModule per objective, each composing any control form.

A config names the method by class path (``lightning_split.SplitSteering``) and the form by ``form:``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..data.batch import PairBatch
from ..objectives.dpo import DPO
from ..objectives.reps import RePS
from ..objectives.sft import SFT
from ..objectives.split import SPLIT
from .steering_module import SteeringModule


class SplitSteering(SteeringModule):
    """SPLIT: ``λ_p·CE(A_p) + λ_n·CE(A_n) + γ·ReLU(θ − (CE(A_n) − CE(A_p)))``.

    Args:
        lambda_p: weight of the target completion's CE.
        lambda_n: weight of the other completion's CE (utility on both polarities).
        gamma: weight of the margin hinge.
        theta: margin in nats per token.
        lambda_ref: weight of the optional reference hinge (0: off and never computed).
        bidirectional: also train the swapped pair at ``−m``.
        **kwargs: the :class:`SteeringModule` arguments (backbone, form, layer, …).
    """

    objective_name = "split"

    def __init__(
        self,
        lambda_p: float = 1.0,
        lambda_n: float = 0.5,
        gamma: float = 5.0,
        theta: float = 0.5,
        lambda_ref: float = 0.0,
        bidirectional: bool = True,
        **kwargs: Any,
    ) -> None:
        self._objective_args = dict(
            lambda_p=lambda_p, lambda_n=lambda_n, gamma=gamma, theta=theta, lambda_ref=lambda_ref,
            bidirectional=bidirectional,
        )  # fmt: skip
        super().__init__(**kwargs)

    def build_objective(self) -> SPLIT:
        return SPLIT(**self._objective_args)


class SFTSteering(SteeringModule):
    """Bidirectional SFT: ``CE(A_p | +m)`` and ``CE(A_n | −m)``.

    Args:
        bidirectional: also train ``A_n`` at ``−m``.
        **kwargs: the :class:`SteeringModule` arguments.
    """

    objective_name = "sft"

    def __init__(self, bidirectional: bool = True, **kwargs: Any) -> None:
        self._objective_args = dict(bidirectional=bidirectional)
        super().__init__(**kwargs)

    def build_objective(self) -> SFT:
        return SFT(**self._objective_args)


class RePSSteering(SteeringModule):
    """RePS (scaled SimPO with the unsteered model's β; vector "sub" passes project the vector out).

    Args:
        bidirectional: also train the swapped pair.
        beta_floor: lower bound of β.
        **kwargs: the :class:`SteeringModule` arguments.
    """

    objective_name = "reps"

    def __init__(self, bidirectional: bool = True, beta_floor: float = 1.0, **kwargs: Any) -> None:
        self._objective_args = dict(bidirectional=bidirectional, beta_floor=beta_floor)
        super().__init__(**kwargs)

    def build_objective(self) -> RePS:
        return RePS(**self._objective_args)


class DPOSteering(SteeringModule):
    """DPO/BiPO-style preference objective with the unsteered model as reference.

    Args:
        beta: DPO temperature.
        bidirectional: also train the swapped pair at ``−m`` (BiPO).
        **kwargs: the :class:`SteeringModule` arguments.
    """

    objective_name = "dpo"

    def __init__(self, beta: float = 0.1, bidirectional: bool = True, **kwargs: Any) -> None:
        self._objective_args = dict(beta=beta, bidirectional=bidirectional)
        super().__init__(**kwargs)

    def build_objective(self) -> DPO:
        return DPO(**self._objective_args)


class DiffMeanSteering(SteeringModule):
    """DiffMean (CAA): no training; ``v`` = mean over pairs of (mean answer-token residual of ``A_p`` −
    that of ``A_n``) after block ``layer``. One epoch over the training pairs fits it.

    Args:
        **kwargs: the :class:`SteeringModule` arguments (``form`` must be ``vector``).
    """

    objective_name = "diffmean"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("form", "vector")
        if kwargs["form"] != "vector":
            raise ValueError("DiffMean fits a steering vector: use form='vector'")
        kwargs.setdefault("init_std", 0.0)
        super().__init__(**kwargs)
        self.automatic_optimization = False

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
        with torch.no_grad():
            self.control[0].vector.copy_((total / count).to(self.control[0].vector.dtype))

    def configure_optimizers(self) -> None:
        return None
