"""Full fine-tuning of one decoder block, the limit case: ``Δh = m·(F_θ'(h) − F_θ(h))``."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .base import HookCall, Intervention


class FullBlockIntervention(Intervention):
    """A trainable float32 copy of decoder block ``layer``; the update is the copy's output minus the base's.

    At ``m = 1`` the block is replaced by its fine-tuned copy, at ``m = 0`` the base block is untouched.
    The copy is built from the backbone's block, so loading a saved one needs the same backbone.

    Args:
        layer: index of the block.
        block: the backbone's block to copy (not modified).
    """

    site = "block"
    form = "full"

    def __init__(self, layer: int, block: nn.Module) -> None:
        super().__init__(layer)
        self.block = copy.deepcopy(block).float()
        self.block.requires_grad_(True)
        self.block.train(False)

    def delta(self, x: torch.Tensor, call: HookCall) -> torch.Tensor:
        kwargs = {k: _to_float(v) for k, v in call.kwargs.items()}
        args = (x, *(_to_float(a) for a in call.args[1:]))
        out = self.block(*args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        base = call.output[0] if isinstance(call.output, tuple) else call.output
        return out - base.to(out.dtype)

    def config(self) -> dict[str, Any]:
        return super().config()


def _to_float(value: Any) -> Any:
    if torch.is_tensor(value) and value.is_floating_point():
        return value.float()
    if isinstance(value, tuple):
        return tuple(_to_float(v) for v in value)
    return value
