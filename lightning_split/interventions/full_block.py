"""Full fine-tuning of one decoder block, the limit case: ``Δh = m·(F_θ'(h) − F_θ(h))``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from ..layout import ModelLayout
from ..quantization import dense_copy
from .base import FormOptions, HookCall, Intervention


@dataclass(frozen=True)
class FullBlockOptions(FormOptions):
    """Options of the ``full`` form: none (the copy starts equal to the backbone's block)."""


class FullBlockIntervention(Intervention):
    """A trainable float32 copy of decoder block ``layer``; the update is the copy's output minus the base's.

    At ``m = 1`` the block is replaced by its fine-tuned copy, at ``m = 0`` the base block is untouched.
    The copy is built from the backbone's block, so loading a saved one needs the same backbone.

    Args:
        layer: index of the block.
        block: the backbone's block to copy (not modified).
    """

    form = "full"
    options = FullBlockOptions
    site = "block"

    def __init__(self, layer: int, block: nn.Module) -> None:
        super().__init__(layer)
        self.block = dense_copy(block)  # float32; bitsandbytes layers of a quantized backbone dequantized
        self.block.requires_grad_(True)
        self.block.train(False)
        self._cache: Cache | None = None

    @classmethod
    def build(cls, options: FullBlockOptions, layout: ModelLayout, layer: int) -> FullBlockIntervention:
        return cls(layer, layout.blocks[layer])

    def delta(self, x: torch.Tensor, call: HookCall) -> torch.Tensor:
        def prepare(value: Any) -> Any:
            if isinstance(value, Cache):
                return self._private_cache(value, x.shape[1])
            return _to_float(value)

        kwargs = {k: prepare(v) for k, v in call.kwargs.items()}
        args = (x, *(prepare(a) for a in call.args[1:]))
        out = self.block(*args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        base = call.output[0] if isinstance(call.output, tuple) else call.output
        return out - base.to(out.dtype)

    def _private_cache(self, shared: Cache, new_tokens: int) -> Cache:
        """The copy keeps its own keys and values during cached decoding; a new sequence starts a new cache."""
        if self._cache is None or shared.get_seq_length(self.layer) == new_tokens:
            self._cache = DynamicCache()
            layers = getattr(shared, "layers", [])
            if len(layers) > self.layer and getattr(layers[self.layer], "is_sliding", False):
                # a sliding-window block (Gemma-2/3) gets a mask sized for the shared sliding cache: keep the
                # same window in the private cache, or decoding past the window fails on a shape mismatch
                window = layers[self.layer].sliding_window
                self._cache.layers = [DynamicLayer() for _ in range(self.layer)]
                self._cache.layers.append(DynamicSlidingWindowLayer(sliding_window=window))
        return self._cache


def _to_float(value: Any) -> Any:
    if torch.is_tensor(value) and value.is_floating_point():
        return value.float()
    if isinstance(value, tuple):
        return tuple(_to_float(v) for v in value)
    return value
