"""Weight-space controls (local weight, LoRA) merged into the backbone at a chosen ``m``: a plain checkpoint.

Both forms edit the MLP down-projection of block ``L``: ``W_down + m·ΔW`` and ``b_down + m·Δb``
(:mod:`lightning_split.interventions.local_weight`, :mod:`lightning_split.interventions.lora`). Writing the edited
weights back gives a checkpoint that ``AutoModelForCausalLM.from_pretrained`` loads with no lightning_split
code and that computes the steered model at that ``m``, at every position.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..artifacts import SteeredModel
from ..errors import OptionError
from ..interventions import Intervention, LocalWeightIntervention, LoRAIntervention
from ..layout import ModelLayout


def weight_update(intervention: Intervention) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(ΔW, Δb)`` of a weight-space intervention, ``ΔW`` as ``[out, in]`` (``Δb`` is ``None`` for LoRA).

    Raises:
        OptionError: the intervention is not a weight edit (vector, ReFT, full block).
    """
    if isinstance(intervention, LocalWeightIntervention):
        return intervention.weight.detach().float(), intervention.bias.detach().float()
    if isinstance(intervention, LoRAIntervention):
        delta = intervention.lora_B.weight.detach().float() @ intervention.lora_A.weight.detach().float()
        return delta * intervention.scaling, None
    raise OptionError(f"the {intervention.form} form is not a weight edit; only local_weight and lora merge")


def _add_zero_biases(block: nn.Module) -> None:
    """Gives every bias-free linear layer of ``block``'s MLP a zero bias (what ``mlp_bias=True`` expects)."""
    for module in block.mlp.modules():
        if isinstance(module, nn.Linear) and module.bias is None:
            module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype))


def merge_control(model: nn.Module, layout: ModelLayout, control: nn.ModuleList, multiplier: float) -> None:
    """Writes ``m·ΔW`` and ``m·Δb`` of every intervention of ``control`` into the backbone's weights, in place.

    A ``Δb`` needs a bias on the down-projection. Llama-style models without one get ``mlp_bias = True`` and
    zero biases on every MLP projection (the layout that config option loads); other architectures without
    a down-projection bias refuse a nonzero ``Δb``.

    Raises:
        OptionError: a nonzero ``Δb`` has nowhere to go (the message suggests ``--svd-rank``).
    """
    updates = {iv.layer: weight_update(iv) for iv in control}
    needs_bias = [
        layer for layer, (_, bias) in updates.items() if bias is not None and bias.abs().max() > 0
        and layout.down_proj(layer).bias is None
    ]  # fmt: skip
    if needs_bias:
        if not hasattr(model.config, "mlp_bias"):
            raise OptionError(
                f"the control's Δb is nonzero but the {layout.model_type} down-projection has no bias, so it cannot be "
                "merged into a plain checkpoint; export a LoRA with its bias instead (--format peft --svd-rank R)"
            )
        model.config.mlp_bias = True
        for block in layout.blocks:
            _add_zero_biases(block)
    with torch.no_grad():
        for layer, (delta_w, delta_b) in updates.items():
            down = layout.down_proj(layer)
            weight = delta_w.T if layout.down_proj_conv1d else delta_w  # GPT-2's Conv1D stores [in, out]
            down.weight.add_((multiplier * weight).to(down.weight.dtype))
            if delta_b is not None and down.bias is not None:
                down.bias.add_((multiplier * delta_b).to(down.bias.dtype))


def export_merged(steered: SteeredModel, output: Path, multiplier: float) -> None:
    """Merges ``steered``'s control at ``multiplier`` into its backbone and saves model and tokenizer at ``output``.

    The backbone is modified in place (load a fresh one to steer it again).
    """
    merge_control(steered.model, steered.layout, steered.control, multiplier)
    steered.model.save_pretrained(str(output))
    steered.tokenizer.save_pretrained(str(output))
