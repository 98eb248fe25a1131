"""ReFT-style form (LoReFT): ``Δh = m·Rᵀ(W h + b − R h)`` on the residual stream after block ``layer``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..layout import ModelLayout
from .base import FormOptions, HookCall, Intervention


@dataclass(frozen=True)
class ReFTOptions(FormOptions):
    """Options of the ``reft`` form.

    Args:
        rank: number of rows of the orthonormal projection ``R``.
    """

    rank: int = field(default=4, metadata={"min": 1})


class ReFTIntervention(Intervention):
    """A low-rank representation edit with orthonormal rows ``R`` (``r × d``) and an affine ``W h + b``.

    In the unified view ``ΔW = Rᵀ(W − R)`` and ``Δb = Rᵀb``: an input-dependent low-rank update.

    Args:
        layer: decoder block whose output is edited.
        hidden_size: residual-stream width ``d``.
        rank: number of rows of ``R``.
    """

    form = "reft"
    options = ReFTOptions
    site = "block_output"

    def __init__(self, layer: int, hidden_size: int, rank: int = 4) -> None:
        super().__init__(layer)
        self.hidden_size = int(hidden_size)
        self.rank = int(rank)
        raw = torch.empty(rank, hidden_size)
        nn.init.orthogonal_(raw)
        self.rotate_raw = nn.Parameter(raw)
        self.learned_source = nn.Linear(hidden_size, rank)

    @classmethod
    def build(cls, options: ReFTOptions, layout: ModelLayout, layer: int) -> ReFTIntervention:
        return cls(layer, layout.hidden_size, rank=options.rank)

    @property
    def rotation(self) -> torch.Tensor:
        """``R`` (``r × d``) with orthonormal rows: the Q factor of the unconstrained ``rotate_raw``.

        Any value of ``rotate_raw`` (a checkpoint, an optimiser step) maps to a valid ``R``.
        """
        q, r = torch.linalg.qr(self.rotate_raw.T)
        return (q * torch.sign(torch.diagonal(r)).unsqueeze(0)).T

    def delta(self, x: torch.Tensor, call: HookCall) -> torch.Tensor:
        r = self.rotation
        return (self.learned_source(x) - x @ r.T) @ r

    def config(self) -> dict[str, Any]:
        return {**super().config(), "hidden_size": self.hidden_size, "rank": self.rank}
