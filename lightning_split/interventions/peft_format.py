"""Exchanging a :class:`LoRAIntervention` with peft's adapter format.

A peft LoRA adapter is a folder with ``adapter_config.json`` (a serialised ``LoraConfig``) and
``adapter_model.safetensors`` whose keys are ``base_model.model.<module path>.lora_A.weight`` and
``…lora_B.weight`` (peft 0.21 naming, adapter name removed). A LoRA control on the down-projection of block
``L`` is exactly such an adapter with one target module, so :func:`export_peft_adapter` writes a folder that
``peft.PeftModel.from_pretrained(base, folder)`` loads (it equals the control at ``m = 1``), and
:func:`import_peft_adapter` reads one back. The multiplier has no peft counterpart: peft applies the adapter
at ``m = 1``; scaling ``lora_alpha`` by ``m`` gives any other fixed ``m``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file
from torch import nn

from ..layout import ModelLayout, discover_layout
from .lora import LoRAIntervention

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."

_UNSUPPORTED = {
    "use_dora": False,
    "use_rslora": False,
    "bias": "none",
    "lora_bias": False,
    "modules_to_save": None,
    "layer_replication": None,
}


def down_proj_module_path(model: nn.Module, layer: int, layout: ModelLayout | None = None) -> str:
    """The dotted path, from the model root, of the down-projection of block ``layer``.

    Example: ``model.layers.2.mlp.down_proj`` (Llama), ``transformer.h.2.mlp.c_proj`` (GPT-2).
    """
    layout = layout or discover_layout(model)
    target = layout.down_proj(layer)
    for name, module in model.named_modules():
        if module is target:
            return name
    raise ValueError(f"the down-projection of block {layer} is not a submodule of {type(model).__name__}")


def peft_key(module_path: str, which: str, tensor: str = "weight") -> str:
    """peft's state-dict key of ``lora_A`` / ``lora_B`` on ``module_path`` (``which`` is ``"A"`` or ``"B"``;
    ``tensor`` is ``"weight"`` or, for ``lora_B`` with peft's ``lora_bias``, ``"bias"``)."""
    return f"{KEY_PREFIX}{module_path}.lora_{which}.{tensor}"


def export_peft_adapter(
    intervention: LoRAIntervention | Sequence[LoRAIntervention],
    model: nn.Module,
    directory: str | Path,
    base_model_name_or_path: str | None = None,
    layout: ModelLayout | None = None,
    biases: Mapping[int, torch.Tensor] | None = None,
) -> Path:
    """Writes ``intervention`` as a peft LoRA adapter folder; returns the folder.

    Args:
        intervention: the LoRA control (one block's down-projection), or one per block of a several-block
            control (they must share rank, alpha and dropout: peft's config holds one of each).
        model: the backbone it belongs to (gives the module path of the down-projection).
        directory: output folder (created).
        base_model_name_or_path: recorded in ``adapter_config.json`` (defaults to the model config's
            ``_name_or_path`` when it has one).
        layout: the model's layout (discovered when omitted).
        biases: a bias on ``lora_B`` per block (peft's ``lora_bias``, scaled like the branch), e.g. the ``Δb`` of
            a local-weight control approximated by a LoRA; ``None`` writes a plain LoRA.
    """
    interventions = [intervention] if isinstance(intervention, LoRAIntervention) else list(intervention)
    shared = {(iv.rank, iv.alpha, iv.dropout_p) for iv in interventions}
    if len(shared) != 1:
        raise ValueError(f"the LoRA interventions differ in (rank, alpha, dropout) {sorted(shared)}; peft needs one")
    first = interventions[0]
    layout = layout or discover_layout(model)
    paths = {iv.layer: down_proj_module_path(model, iv.layer, layout) for iv in interventions}
    if base_model_name_or_path is None:
        base_model_name_or_path = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    config = LoraConfig(
        r=first.rank,
        lora_alpha=first.alpha,
        lora_dropout=first.dropout_p,
        target_modules=[paths[iv.layer] for iv in interventions],
        fan_in_fan_out=layout.down_proj_conv1d,
        bias="none",
        lora_bias=biases is not None,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path,
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(directory))
    tensors: dict[str, torch.Tensor] = {}
    for iv in interventions:
        tensors[peft_key(paths[iv.layer], "A")] = iv.lora_A.weight.detach().float().contiguous().cpu()
        tensors[peft_key(paths[iv.layer], "B")] = iv.lora_B.weight.detach().float().contiguous().cpu()
        if biases is not None:
            tensors[peft_key(paths[iv.layer], "B", "bias")] = biases[iv.layer].detach().float().contiguous().cpu()
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    return directory


def _layer_of(target: str, layout: ModelLayout) -> int:
    """The block whose down-projection ``target`` names (a full module path or its block-relative tail)."""
    pattern = re.compile(rf"(?:^|\.){re.escape(layout.blocks_attr)}\.(\d+)\.{re.escape(layout.down_proj_path)}$")
    match = pattern.search(target)
    if match is None or not 0 <= int(match.group(1)) < layout.num_layers:
        raise ValueError(
            f"peft target module {target!r} is not the down-projection ('{layout.blocks_attr}.<i>."
            f"{layout.down_proj_path}') of a block of this model ({layout.num_layers} blocks)"
        )
    return int(match.group(1))


def import_peft_adapter(
    directory: str | Path, model: nn.Module | None = None, layout: ModelLayout | None = None
) -> LoRAIntervention:
    """Reads a peft LoRA adapter on one block's down-projection into a :class:`LoRAIntervention`.

    Args:
        directory: a folder with ``adapter_config.json`` and ``adapter_model.safetensors``.
        model: the backbone (used to discover ``layout`` when it is not given).
        layout: the backbone's layout.

    Raises:
        ValueError: the adapter is not a plain LoRA on exactly one down-projection of this model (DoRA,
            rsLoRA, LoRA biases, rank/alpha patterns, several targets), or its shapes do not fit.
        FileNotFoundError: a file of the adapter is missing.
    """
    if layout is None:
        if model is None:
            raise ValueError("import_peft_adapter needs the backbone (model=) or its layout (layout=)")
        layout = discover_layout(model)
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found: {directory} is not a peft adapter folder")
    config: dict[str, Any] = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{config_path}: peft_type {config.get('peft_type')!r} is not LORA")
    for key, plain in _UNSUPPORTED.items():
        if config.get(key, plain) not in (plain, {}, []):
            raise ValueError(f"{config_path}: {key}={config[key]!r} has no LoRA-control equivalent")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{config_path}: rank_pattern/alpha_pattern are not supported")
    targets = config.get("target_modules")
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    if len(targets) != 1:
        raise ValueError(f"{config_path}: expected one target module (a down-projection), got {targets}")
    layer = _layer_of(targets[0], layout)

    tensors = load_file(str(weights_path))
    suffix = f"{layout.blocks_attr}.{layer}.{layout.down_proj_path}"
    found: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        for which in ("A", "B"):
            if re.search(rf"(?:^|\.){re.escape(suffix)}\.lora_{which}(?:\.[\w-]+)?\.weight$", key):
                found[which] = value
    if set(found) != {"A", "B"} or len(tensors) != 2:
        raise ValueError(f"{weights_path}: expected exactly lora_A and lora_B of {suffix}, got {sorted(tensors)}")

    rank = int(config["r"])
    intervention = LoRAIntervention(
        layer,
        layout.intermediate_size,
        layout.hidden_size,
        rank=rank,
        alpha=float(config.get("lora_alpha", rank)),
        dropout=float(config.get("lora_dropout", 0.0)),
    )
    expected = {"A": (rank, layout.intermediate_size), "B": (layout.hidden_size, rank)}
    for which, shape in expected.items():
        if tuple(found[which].shape) != shape:
            raise ValueError(
                f"{weights_path}: lora_{which} has shape {tuple(found[which].shape)}, this model needs {shape}"
            )
    with torch.no_grad():
        intervention.lora_A.weight.copy_(found["A"].float())
        intervention.lora_B.weight.copy_(found["B"].float())
    return intervention


__all__ = ["down_proj_module_path", "export_peft_adapter", "import_peft_adapter", "peft_key"]
