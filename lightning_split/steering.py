"""Installing interventions on a model: ``Δh = m·(ΔW x + Δb)`` applied by forward hooks in a context.

:func:`steer` registers one forward hook per intervention at its site and removes every hook when the
context exits, also when the body raises. The multiplier ``m`` is a tensor of shape ``[batch]`` (one per
example) and ``token_mask`` chooses the steered positions of the first pass; later passes inside the same
context are incremental decoding steps and take ``generated_value`` (a hook on the decoder counts passes).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .interventions.base import HookCall, Intervention
from .layout import ModelLayout

Positions = Literal["all", "completion", "prompt"]
"""Which tokens are steered: every token, only completion (generated) tokens, or only prompt tokens."""

POSITIONS: tuple[str, ...] = ("all", "completion", "prompt")


@dataclass
class SteeringState:
    """What the hooks read on every call.

    Attributes:
        multiplier: ``[batch]`` float tensor, the ``m`` of each example.
        token_mask: ``[batch, T]`` 0/1 float tensor of steered positions for the first (full-sequence)
            pass, or ``None`` to steer every position.
        generated_value: mask value for the tokens of later passes (incremental decoding steps).
        ablate: optional ``[batch]`` bool tensor; those rows get the intervention's projection-out update
            instead of ``m·Δ`` (RePS "sub" pairs for the vector form).
    """

    multiplier: torch.Tensor
    token_mask: torch.Tensor | None = None
    generated_value: float = 1.0
    ablate: torch.Tensor | None = None
    passes: int = 0
    """Decoder passes finished inside the context: the first sees the full sequence, later ones are
    incremental decoding steps with a KV cache."""

    def is_identity(self) -> bool:
        """True when no example is changed (every ``m`` is 0 and nothing is ablated)."""
        no_ablation = self.ablate is None or not bool(self.ablate.any())
        return no_ablation and not bool(self.multiplier.ne(0).any())

    def position_weights(self, h: torch.Tensor) -> torch.Tensor:
        """Returns the ``[batch, T, 1]`` float mask of steered positions for hidden states ``h``."""
        batch, length = h.shape[0], h.shape[1]
        if self.token_mask is None:
            return h.new_ones(batch, length, 1, dtype=torch.float32)
        if self.passes > 0:
            return h.new_full((batch, length, 1), float(self.generated_value), dtype=torch.float32)
        if self.token_mask.shape[1] != length:
            raise ValueError(f"token_mask covers {self.token_mask.shape[1]} positions but the first pass has {length}")
        return self.token_mask.to(device=h.device, dtype=torch.float32).unsqueeze(-1)

    def rows(self, batch: int, device: torch.device) -> torch.Tensor:
        """Returns ``m`` as a ``[batch, 1, 1]`` float32 tensor, broadcasting a single value."""
        m = self.multiplier.to(device=device, dtype=torch.float32).reshape(-1)
        if m.numel() == 1:
            m = m.expand(batch)
        if m.numel() != batch:
            raise ValueError(
                f"steering got {m.numel()} multipliers for a batch of {batch}: pass one multiplier per "
                "example (generation with num_return_sequences or beams expands the batch; repeat m to match)"
            )
        return m.view(batch, 1, 1)


def token_mask_for(segments: torch.Tensor, positions: Positions) -> torch.Tensor | None:
    """Builds the steered-position mask from segment ids (0 prompt, >0 completion, -1 padding).

    Returns ``None`` for ``"all"`` (steer everything).
    """
    if positions == "all":
        return None
    if positions == "completion":
        return (segments > 0).float()
    if positions == "prompt":
        return (segments == 0).float()
    raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")


def generated_value_for(positions: Positions) -> float:
    """Mask value for generated tokens: steered unless only the prompt is steered."""
    return 0.0 if positions == "prompt" else 1.0


def _hooked_module(layout: ModelLayout, intervention: Intervention) -> nn.Module:
    if intervention.site == "down_proj":
        return layout.down_proj(intervention.layer)
    return layout.blocks[intervention.layer]


def _make_hook(intervention: Intervention, state: SteeringState):
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if state.is_identity():
            return output
        h = output[0] if isinstance(output, tuple) else output
        x = h if intervention.site == "block_output" else (args[0] if args else kwargs["hidden_states"])
        call = HookCall(args=args, kwargs=kwargs, output=output)
        weights = state.position_weights(h)
        m = state.rows(h.shape[0], h.device)
        x32 = x.to(intervention.param_dtype)
        update = (m * weights) * intervention.delta(x32, call)
        if state.ablate is not None and bool(state.ablate.any()):
            rows = state.ablate.to(h.device).view(-1, 1, 1).float()
            update = torch.where(rows.bool(), weights * intervention.ablate(x32), update)
        new = h + update.to(h.dtype)
        if isinstance(output, tuple):
            return (new, *output[1:])
        return new

    return hook


def _count_pass(state: SteeringState):
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        state.passes += 1

    return hook


@contextmanager
def steer(
    layout: ModelLayout,
    interventions: Iterable[Intervention],
    multiplier: torch.Tensor | float,
    token_mask: torch.Tensor | None = None,
    generated_value: float = 1.0,
    ablate: torch.Tensor | None = None,
) -> Iterator[SteeringState]:
    """Installs ``interventions`` on the model described by ``layout`` for the duration of the context.

    Args:
        layout: where the blocks and down-projections of the model are.
        interventions: the control's interventions.
        multiplier: ``m`` per example (``[batch]``) or one float for all.
        token_mask: ``[batch, T]`` steered positions of the full-sequence pass (``None``: all).
        generated_value: mask value for every pass after the first (incremental decoding steps).
        ablate: ``[batch]`` rows that get the projection-out update instead.

    Yields:
        The :class:`SteeringState`; changing its fields inside the context changes later passes.

    Example:
        >>> with steer(layout, [vector], torch.tensor([0.0, 4.0])):
        ...     logits = model(input_ids).logits
    """
    if not torch.is_tensor(multiplier):
        multiplier = torch.tensor([float(multiplier)])
    state = SteeringState(multiplier, token_mask, generated_value, ablate)
    handles = [layout.decoder.register_forward_hook(_count_pass(state))]
    try:
        for intervention in interventions:
            module = _hooked_module(layout, intervention)
            handles.append(module.register_forward_hook(_make_hook(intervention, state), with_kwargs=True))
        yield state
    finally:
        for handle in handles:
            handle.remove()
