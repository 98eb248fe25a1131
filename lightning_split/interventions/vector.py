"""Vector form (activation steering): ``Δh = m·v`` on the residual stream after block ``layer``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import HookCall, Intervention


class VectorIntervention(Intervention):
    """A learned bias change ``Δb = v`` added to the residual stream after a decoder block.

    Args:
        layer: decoder block whose output is steered.
        hidden_size: residual-stream width ``d``.
        init_std: standard deviation of the random initial vector (0 gives a zero vector).
    """

    site = "block_output"
    form = "vector"

    def __init__(self, layer: int, hidden_size: int, init_std: float = 0.01) -> None:
        super().__init__(layer)
        self.hidden_size = int(hidden_size)
        self.init_std = float(init_std)
        self.vector = nn.Parameter(torch.randn(hidden_size) * init_std)

    def delta(self, x: torch.Tensor, call: HookCall) -> torch.Tensor:
        return self.vector.expand_as(x)

    def ablate(self, h: torch.Tensor) -> torch.Tensor:
        """Removes the positive projection of ``h`` on ``v``: ``−ReLU(h·v)/‖v‖²·v`` (RePS null-it-out)."""
        v = self.vector
        coef = torch.relu(h @ v) / v.pow(2).sum().clamp_min(1e-12)
        return -coef.unsqueeze(-1) * v

    def config(self) -> dict[str, Any]:
        return {**super().config(), "hidden_size": self.hidden_size, "init_std": self.init_std}
