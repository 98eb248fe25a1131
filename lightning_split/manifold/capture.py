"""The residual stream after chosen blocks: read (one readout per completion) or shifted (for gradients).

The stream after block ``l`` is taken as the input of block ``l + 1`` (a forward pre-hook), so it includes any
steering update added to block ``l``'s output whatever the order of hooks; after the last block it is the
output of that block (a forward hook, which would run before a steering hook on the same block, so a control
that edits the last block's output is refused there by :func:`check_layers`).

A pair's two readouts, as DiffMean defines its activations, are the mean residual state over the tokens of
``A_n`` (polarity 0) and over the tokens of ``A_p`` (polarity 1) of the packed row ``[prompt | A_p | A_n]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..interventions.base import Intervention
from ..layout import ModelLayout
from ..packing import NEG, POS, PackedPairs

POLARITIES: tuple[str, str] = ("A_n", "A_p")
"""Names of the two readouts by polarity label (0: mean over ``A_n``, 1: mean over ``A_p``)."""

StreamFn = Callable[[torch.Tensor], torch.Tensor | None]
"""Called with the ``[B, S, d]`` stream; may return a replacement."""


def readout_weights(packed: PackedPairs) -> torch.Tensor:
    """``[B, 2, S]`` weights averaging each row's ``A_n`` tokens (row 0) and ``A_p`` tokens (row 1)."""
    masks = torch.stack([packed.segments == NEG, packed.segments == POS], 1).float()
    return masks / masks.sum(2, keepdim=True)


def check_layers(layout: ModelLayout, control: Sequence[Intervention], layers: Sequence[int]) -> list[int]:
    """The layers sorted and checked: within the model, not below the control, and readable after steering.

    Raises:
        ValueError: naming the layer and the allowed range.
    """
    first = min(iv.layer for iv in control)
    last = layout.num_layers - 1
    for layer in layers:
        if not first <= layer <= last:
            raise ValueError(
                f"layer {layer}: activations are measured from the control's first layer {first} to the last block "
                f"{last} (the lower blocks are not recomputed per multiplier); choose layers in {first}..{last}"
            )
    if last in layers and any(iv.layer == last and iv.site != "down_proj" for iv in control):
        raise ValueError(
            f"layer {last}: the control edits the output of the last block, which cannot be read after the "
            "steering hook; leave the last block out of the layers"
        )
    return sorted(set(layers))


@contextmanager
def stream_hooks(layout: ModelLayout, functions: dict[int, StreamFn]) -> Iterator[None]:
    """Calls ``functions[l]`` on the residual stream after block ``l`` in every decoder forward of the context."""

    def before(fn: StreamFn):
        def hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
            new = fn(args[0] if args else kwargs["hidden_states"])
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        return hook

    def after(fn: StreamFn):
        def hook(_module: nn.Module, _args: tuple, output: Any) -> Any:
            new = fn(output[0] if isinstance(output, tuple) else output)
            if new is None or not isinstance(output, tuple):
                return new
            return (new, *output[1:])

        return hook

    handles = []
    try:
        for layer, fn in functions.items():
            if layer + 1 < layout.num_layers:
                block = layout.block(layer + 1)
                handles.append(block.register_forward_pre_hook(before(fn), with_kwargs=True))
            else:
                handles.append(layout.block(layer).register_forward_hook(after(fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_readouts(
    layout: ModelLayout, layers: Sequence[int], packed: PackedPairs
) -> Iterator[dict[int, torch.Tensor]]:
    """Records ``{layer: [B, 2, d]}`` float32 readouts of ``packed`` (:func:`readout_weights`) in the forward.

    The dict yielded is filled when the forward runs (one forward per context; a second overwrites).
    """
    weights = readout_weights(packed)
    captured: dict[int, torch.Tensor] = {}

    def reader(layer: int) -> StreamFn:
        def read(hidden: torch.Tensor) -> None:
            captured[layer] = (weights.to(hidden.device) @ hidden.detach().float()).cpu()

        return read

    with stream_hooks(layout, {layer: reader(layer) for layer in layers}):
        yield captured
