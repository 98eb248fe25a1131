"""LoRA form: ``ΔW = B·A`` (rank ``r``) on the MLP down-projection of block ``layer``.

The branch has peft's layout, initialisation and scaling (``lora_A`` Kaiming-uniform, ``lora_B`` zero,
``scaling = alpha / r``), so a trained control exports to, and imports from, peft's adapter format
(:mod:`lightning_split.interventions.peft_format`). Unlike a peft layer, the branch is scaled per example
by the steering multiplier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..layout import ModelLayout
from .base import FormOptions, HookCall, Intervention


@dataclass(frozen=True)
class LoRAOptions(FormOptions):
    """Options of the ``lora`` form.

    Args:
        rank: LoRA rank ``r``.
        alpha: LoRA alpha (``None``: equal to ``rank``, a scaling of 1).
        dropout: dropout on the branch input during training (peft's ``lora_dropout``).
    """

    rank: int = field(default=4, metadata={"min": 1})
    alpha: float | None = field(default=None, metadata={"above": 0.0})
    dropout: float = field(default=0.0, metadata={"min": 0.0, "below": 1.0})


class LoRAIntervention(Intervention):
    """``Δh = m·(alpha/r)·B(A x_mid)`` added to the down-projection's output.

    Args:
        layer: decoder block whose down-projection is edited.
        in_features: down-projection input width.
        out_features: down-projection output width.
        rank: LoRA rank ``r``.
        alpha: LoRA alpha (``None`` means ``alpha = r``, a scaling of 1).
        dropout: dropout on the branch input during training (peft's ``lora_dropout``).
    """

    form = "lora"
    options = LoRAOptions
    site = "down_proj"
    prepare_kbit_by_default = True

    def __init__(
        self,
        layer: int,
        in_features: int,
        out_features: int,
        rank: int = 4,
        alpha: float | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(layer)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.rank = int(rank)
        self.alpha = float(alpha if alpha is not None else rank)
        self.dropout_p = float(dropout)
        self.lora_A = nn.Linear(in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @classmethod
    def build(cls, options: LoRAOptions, layout: ModelLayout, layer: int) -> LoRAIntervention:
        return cls(
            layer, layout.intermediate_size, layout.hidden_size, options.rank, alpha=options.alpha,
            dropout=options.dropout,
        )  # fmt: skip

    @property
    def scaling(self) -> float:
        """peft's ``lora_alpha / r``."""
        return self.alpha / self.rank

    def delta(self, x: torch.Tensor, call: HookCall) -> torch.Tensor:
        return self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout_p,
        }
