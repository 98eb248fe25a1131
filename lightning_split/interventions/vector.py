"""Vector form (activation steering): ``Δh = m·v`` on the residual stream after block ``layer``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..layout import ModelLayout
from .base import FormOptions, HookCall, Intervention


@dataclass(frozen=True)
class VectorOptions(FormOptions):
    """Options of the ``vector`` form.

    Args:
        init_std: standard deviation of the random initial vector (0 gives a zero vector).
    """

    init_std: float = field(default=0.01, metadata={"min": 0.0})


class VectorIntervention(Intervention):
    """A learned bias change ``Δb = v`` added to the residual stream after a decoder block.

    Args:
        layer: decoder block whose output is steered.
        hidden_size: residual-stream width ``d``.
        init_std: standard deviation of the random initial vector (0 gives a zero vector).
    """

    form = "vector"
    options = VectorOptions
    site = "block_output"
    has_direction = True

    def __init__(self, layer: int, hidden_size: int, init_std: float = 0.01) -> None:
        super().__init__(layer)
        self.hidden_size = int(hidden_size)
        self.init_std = float(init_std)
        self.vector = nn.Parameter(torch.randn(hidden_size) * init_std)

    @classmethod
    def build(cls, options: VectorOptions, layout: ModelLayout, layer: int) -> VectorIntervention:
        return cls(layer, layout.hidden_size, init_std=options.init_std)

    def delta(self, x: torch.Tensor, call: HookCall) -> torch.Tensor:
        return self.vector.expand_as(x)

    @property
    def direction(self) -> nn.Parameter:
        return self.vector

    def config(self) -> dict[str, Any]:
        return {**super().config(), "hidden_size": self.hidden_size, "init_std": self.init_std}
