"""Example form for docs/extending.md: a learned per-channel scaling of the residual stream, ``Δh = m·(s ⊙ h)``.

This file is the whole form: defining the class registers it as ``scale`` with its options, and a config
selects it with ``form: {class_path: docs.examples.scale_form.ScaleOptions, init_args: {init_std: 0.0}}``.
Placed in ``lightning_split/interventions/``, it would be imported (and registered) with the package.
``tests/test_form_contract.py`` runs it through the same contract suite as the shipped forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_split.interventions import FormOptions, HookCall, Intervention
from lightning_split.layout import ModelLayout


@dataclass(frozen=True)
class ScaleOptions(FormOptions):
    """Options of the ``scale`` form.

    Args:
        init_std: standard deviation of the random initial scales (0: the control starts as the identity).
    """

    init_std: float = 0.0


class ScaleIntervention(Intervention):
    """``ΔW = diag(s)`` on the residual stream after block ``layer``: each channel scaled by ``1 + m·s``.

    Args:
        layer: decoder block whose output is scaled.
        hidden_size: residual-stream width ``d``.
        init_std: standard deviation of the initial ``s``.
    """

    form = "scale"
    options = ScaleOptions
    site = "block_output"

    def __init__(self, layer: int, hidden_size: int, init_std: float = 0.0) -> None:
        super().__init__(layer)
        self.hidden_size = int(hidden_size)
        self.init_std = float(init_std)
        self.scale = nn.Parameter(torch.randn(hidden_size) * init_std)

    @classmethod
    def build(cls, options: ScaleOptions, layout: ModelLayout, layer: int) -> ScaleIntervention:
        return cls(layer, layout.hidden_size, init_std=options.init_std)

    def delta(self, x: torch.Tensor, call: HookCall) -> torch.Tensor:
        return x * self.scale

    def config(self) -> dict[str, Any]:
        return {**super().config(), "hidden_size": self.hidden_size, "init_std": self.init_std}
