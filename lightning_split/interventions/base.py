"""The intervention contract: every control is a dynamic weight update ``Δh = m·(ΔW h + Δb)``.

An :class:`Intervention` owns the learned update (ΔW, Δb in some parameterisation) for one site of the
network and returns the *unscaled* update ``ΔW x + Δb`` for the input ``x`` of the edited map. The
per-example multiplier ``m`` and the token positions are applied by :mod:`lightning_split.steering`, which
installs interventions as forward hooks inside a context manager.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

Site = Literal["block_output", "down_proj", "block"]
"""Where an intervention edits the network.

- ``block_output``: the residual stream after decoder block ``layer``; ``x`` is that residual.
- ``down_proj``: the MLP down-projection of block ``layer``; ``x`` is its input (``act(gate(x))·up(x)``)
  and the update is added to its output, so ``ΔW`` edits ``W_down`` exactly (also on Gemma, where a
  norm follows the MLP).
- ``block``: the whole decoder block ``layer`` (full fine-tuning); ``x`` is the block input.
"""


@dataclass
class HookCall:
    """What a hook saw when the edited module ran: its inputs, keyword inputs and unmodified output."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


class Intervention(nn.Module):
    """Base class of every control form.

    Subclasses set :attr:`site` and implement :meth:`delta`. Parameters are kept in float32 and the
    update is cast to the activation dtype at the point of use, so the same control works on bf16 and
    quantized backbones.

    Args:
        layer: index of the decoder block the intervention edits.
    """

    site: Site = "block_output"
    form: str = "base"

    def __init__(self, layer: int) -> None:
        super().__init__()
        self.layer = int(layer)

    def delta(self, x: torch.Tensor, call: HookCall) -> torch.Tensor:
        """Returns the unscaled update ``ΔW x + Δb`` with the shape of the edited output.

        Args:
            x: input of the edited map, already cast to the intervention's float dtype.
            call: the hooked module's inputs and unmodified output (used by input-free or block forms).
        """
        raise NotImplementedError

    def ablate(self, h: torch.Tensor) -> torch.Tensor:
        """Returns the update that removes the control's direction from ``h`` (RePS "sub" pairs).

        Only forms with a single direction support it.
        """
        raise NotImplementedError(f"the {self.form} form has no direction to project out")

    def config(self) -> dict[str, Any]:
        """Returns the plain settings that rebuild this intervention (stored next to saved weights)."""
        return {"form": self.form, "layer": self.layer}

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype the update is computed in (float32 unless the user cast the module)."""
        for p in self.parameters():
            return p.dtype
        return torch.float32
