"""Local weight form: a full ``ΔW, Δb`` on the MLP down-projection of block ``layer``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layout import ModelLayout
from .base import FormOptions, HookCall, Intervention


@dataclass(frozen=True)
class LocalWeightOptions(FormOptions):
    """Options of the ``local_weight`` form: none (``ΔW`` and ``Δb`` start at zero)."""


class LocalWeightIntervention(Intervention):
    """``Δh = m·(ΔW x_mid + Δb)`` added to the down-projection's output, i.e. ``W_down + m·ΔW``.

    The update is computed from the shared input ``x_mid`` and scaled per example afterwards, so no
    per-example weight of shape ``[batch, d_in, d_out]`` is ever built.

    Args:
        layer: decoder block whose down-projection is edited.
        in_features: down-projection input width (the MLP intermediate size).
        out_features: down-projection output width (the hidden size).
    """

    form = "local_weight"
    options = LocalWeightOptions
    site = "down_proj"

    def __init__(self, layer: int, in_features: int, out_features: int) -> None:
        super().__init__(layer)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    @classmethod
    def build(cls, options: LocalWeightOptions, layout: ModelLayout, layer: int) -> LocalWeightIntervention:
        return cls(layer, layout.intermediate_size, layout.hidden_size)

    def delta(self, x: torch.Tensor, call: HookCall) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "in_features": self.in_features, "out_features": self.out_features}
