"""Helpers for bitsandbytes-quantized backbones (4-bit NF4, NF4 with double quantization, LLM.int8).

The backbone is quantized by transformers at load time (:func:`lightning_split.backbone.load_backbone`); the
control never is. Two things need care:

- the ``full`` form trains a copy of a decoder block: :func:`dense_copy` dequantizes the copy's bitsandbytes
  layers into ordinary float32 :class:`~torch.nn.Linear` layers (a packed 4/8-bit weight cannot be trained);
- the QLoRA recipe prepares the quantized model with peft's ``prepare_model_for_kbit_training``
  (:func:`prepare_for_kbit_training`), which upcasts the layer norms and embeddings to float32, so hidden
  states reach the steering hooks in float32 even with a bf16 compute dtype. The hooks cast to the
  intervention's dtype on the way in and back to the hidden-state dtype on the way out, so any mix works.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def _bnb_kind(module: nn.Module) -> str | None:
    """``"4bit"``, ``"8bit"`` or ``None`` for a bitsandbytes linear layer (checked by class name: no import)."""
    name = type(module).__name__
    if name in ("Linear4bit", "LinearNF4", "LinearFP4"):
        return "4bit"
    if name == "Linear8bitLt":
        return "8bit"
    return None


def keep_standard_4bit_layout(model: nn.Module) -> int:
    """Turns off bitsandbytes' in-place CPU repacking of 4-bit weights; returns the number of layers changed.

    On CPUs with AVX512-BF16, bitsandbytes (>= 0.49) repacks a 4-bit layer's weight into a CPU-specific layout at
    its first inference forward (eval mode, no gradient) and rewrites its quantization state (double quantization
    expanded, blocks laid along rows). That layout fails for layer widths that are not a multiple of the block
    size and changes the state :func:`dequantized_weight` reads, so a run's outcome depended on the CPU it ran
    on. With the standard layout every CPU computes the same thing.
    """
    layers = [m for m in model.modules() if _bnb_kind(m) == "4bit" and hasattr(m, "support_avx512bf16_for_cpu")]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds any bitsandbytes 4-bit or 8-bit linear layer."""
    return any(_bnb_kind(m) is not None for m in model.modules())


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The float32 ``[out, in]`` weight a bitsandbytes linear layer computes with.

    Args:
        module: a ``Linear4bit`` (NF4/FP4, with or without double quantization) or ``Linear8bitLt``.

    Raises:
        TypeError: ``module`` is not a bitsandbytes linear layer.
    """
    kind = _bnb_kind(module)
    weight = module.weight
    if kind == "4bit":
        import bitsandbytes.functional as bnb_f

        return (
            bnb_f.dequantize_4bit(weight.data, weight.quant_state)
            .float()
            .reshape(module.out_features, module.in_features)
        )
    if kind == "8bit":
        # the row scales live on the weight until the first forward, which moves them to the layer's state
        scale = getattr(weight, "SCB", None)
        if scale is None:
            scale = getattr(getattr(module, "state", None), "SCB", None)
        if weight.data.dtype != torch.int8:  # not quantized (yet): the data is the float weight
            return weight.data.float()
        if scale is None:
            raise ValueError(f"{type(module).__name__}: int8 weight without row scales (SCB)")
        return weight.data.float() * scale.float().unsqueeze(1) / 127.0
    raise TypeError(f"{type(module).__name__} is not a bitsandbytes linear layer")


def dense_copy(module: nn.Module) -> nn.Module:
    """A trainable float32 deep copy of ``module``; bitsandbytes layers become dense ``nn.Linear`` layers.

    The dense weights are the dequantized ones, so the copy computes what the quantized module computes (up
    to the float32-vs-compute-dtype matmul). ``module`` itself is not changed.
    """
    packed = {name: m for name, m in module.named_modules() if name and _bnb_kind(m) is not None}
    clone = copy.deepcopy(module)
    for name, layer in packed.items():
        weight = dequantized_weight(layer)
        dense = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device=weight.device)
        with torch.no_grad():
            dense.weight.copy_(weight)
            if layer.bias is not None:
                dense.bias.copy_(layer.bias.detach().float())
        parent_name, _, child = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        setattr(parent, child, dense)
    if packed:
        log.info("full form: dequantized %d bitsandbytes layers of the copied block to float32", len(packed))
    return clone.float()


def prepare_for_kbit_training(model: nn.Module) -> nn.Module:
    """peft's ``prepare_model_for_kbit_training`` without gradient checkpointing (the QLoRA preparation).

    It freezes every base parameter and upcasts the fp16/bf16 parameters that are not packed (embeddings,
    norms, the LM head) to float32. Gradient checkpointing stays off: the backbone always runs in eval mode
    and the engine already runs the blocks below the control without gradients, once per pair.
    """
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
