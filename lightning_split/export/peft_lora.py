"""Weight-space controls as a peft LoRA adapter with the multiplier folded into its scaling.

peft, vLLM and llama.cpp apply a LoRA at ``scaling = lora_alpha / r`` with no per-example multiplier, so a chosen
``m`` is folded into ``lora_alpha`` (``alpha·m``): the adapter then computes the framework's ``m·Δh``. A LoRA
control exports exactly; a local-weight control is approximated by the best rank-``r`` factorisation of
``ΔW`` (truncated SVD, :func:`svd_lora`), its ``Δb`` carried exactly as peft's ``lora_bias``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import SteeredModel
from ..errors import OptionError
from ..interventions import LocalWeightIntervention, LoRAIntervention
from ..interventions.peft_format import export_peft_adapter


@dataclass(frozen=True)
class SVDLoRA:
    """A rank-``r`` LoRA approximating one local-weight intervention, with its relative error.

    Attributes:
        lora: the LoRA (``scaling = 1``: ``B·A`` approximates ``ΔW``).
        bias: the intervention's ``Δb`` (peft's ``lora_bias``).
        relative_error: ``‖ΔW − B·A‖_F / ‖ΔW‖_F`` (0 for a zero ``ΔW``).
    """

    lora: LoRAIntervention
    bias: torch.Tensor
    relative_error: float


def folded(lora: LoRAIntervention, multiplier: float) -> LoRAIntervention:
    """A copy of ``lora`` whose ``alpha`` carries ``multiplier`` (its scaling becomes ``m·alpha/r``)."""
    out = copy.deepcopy(lora)
    out.alpha = lora.alpha * multiplier
    return out


def svd_lora(intervention: LocalWeightIntervention, rank: int) -> SVDLoRA:
    """The best rank-``rank`` LoRA (Frobenius norm) of ``intervention``'s ``ΔW``: ``B = U_r·√S_r``, ``A = √S_r·V_rᵀ``.

    Raises:
        OptionError: ``rank`` is outside ``1..min(d_in, d_out)`` (``--svd-rank``).
    """
    full = min(intervention.in_features, intervention.out_features)
    if not 1 <= rank <= full:
        raise OptionError(f"--svd-rank is {rank}; it must be between 1 and {full} (the rank of ΔW at most)")
    delta = intervention.weight.detach().double()
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    root = s[:rank].sqrt()
    lora = LoRAIntervention(intervention.layer, intervention.in_features, intervention.out_features, rank, alpha=rank)
    with torch.no_grad():
        lora.lora_B.weight.copy_((u[:, :rank] * root).float())
        lora.lora_A.weight.copy_((root[:, None] * vh[:rank]).float())
    approx = lora.lora_B.weight.detach().double() @ lora.lora_A.weight.detach().double()
    norm = float(delta.norm())
    error = float((delta - approx).norm()) / norm if norm > 0 else 0.0
    return SVDLoRA(lora, intervention.bias.detach().float().clone(), error)


def export_lora_adapter(steered: SteeredModel, output: Path, multiplier: float) -> None:
    """Writes a LoRA control as a peft adapter at ``output`` with ``multiplier`` folded into ``lora_alpha``."""
    loras = [folded(iv, multiplier) for iv in steered.control]  # type: ignore[arg-type]
    export_peft_adapter(loras, steered.model, output, layout=steered.layout)


def export_svd_adapter(steered: SteeredModel, output: Path, rank: int, multiplier: float) -> dict[int, float]:
    """Writes a local-weight control as a rank-``rank`` peft LoRA at ``output`` (``Δb`` as ``lora_bias``).

    Returns:
        The relative approximation error of ``ΔW`` per block.
    """
    approximations = [svd_lora(iv, rank) for iv in steered.control]  # type: ignore[arg-type]
    loras = [folded(a.lora, multiplier) for a in approximations]
    biases = {a.lora.layer: a.bias for a in approximations}
    export_peft_adapter(loras, steered.model, output, layout=steered.layout, biases=biases)
    return {a.lora.layer: a.relative_error for a in approximations}
