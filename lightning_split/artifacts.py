"""Saving and loading a trained control: ``control.safetensors`` plus ``control.json``.

The JSON records the form, layers, backbone, positions, objective, training settings and multiplier grid;
the tensors are read back with safetensors (no unpickling). :func:`load_steered` rebuilds the backbone and
the control in a new process, ready to score or generate at any multiplier.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .interventions import intervention_from_config
from .layout import ModelLayout, discover_layout

CONTROL_DIRNAME = "control"
WEIGHTS_FILE = "control.safetensors"
CONFIG_FILE = "control.json"
FORMAT_VERSION = 1

_TRAINING_KEYS = (
    "form", "objective", "lr", "weight_decay", "eval_multiplier", "nll_reduction", "dtype", "quantization",
)  # fmt: skip


def control_metadata(
    control: nn.ModuleList, hparams: dict[str, Any], objective: str, multipliers: list[float]
) -> dict[str, Any]:
    """Builds the JSON-able description of a control and how it was trained.

    ``training`` holds the module's settings, the form's options and the objective's arguments among them
    (``{class_path, init_args}``).
    """
    return {
        "format_version": FORMAT_VERSION,
        "backbone": hparams.get("backbone"),
        "form": control[0].form,
        "positions": hparams.get("positions", "all"),
        "objective": objective,
        "multipliers": [float(m) for m in multipliers],
        "interventions": [iv.config() for iv in control],
        "layout_override": {k: hparams.get(k) for k in ("blocks_path", "down_proj_path")},
        "training": {k: hparams.get(k) for k in _TRAINING_KEYS if k in hparams},
    }


def save_control(directory: str | Path, control: nn.ModuleList, metadata: dict[str, Any]) -> Path:
    """Writes the control's tensors and metadata into ``directory`` atomically; returns the directory."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in control.state_dict().items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "lightning_split"})
    (tmp / CONFIG_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    if directory.exists():
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
    os.replace(tmp, directory)
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """Reads ``control.json`` of a saved control, with a clear error when it is not one."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a saved lightning_split control")
    metadata = json.loads(path.read_text())
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported control format {metadata.get('format_version')!r}")
    return metadata


def load_control(directory: str | Path, layout: ModelLayout) -> tuple[nn.ModuleList, dict[str, Any]]:
    """Rebuilds a saved control for the backbone described by ``layout`` and loads its tensors."""
    metadata = read_metadata(directory)
    control = nn.ModuleList(intervention_from_config(cfg, layout) for cfg in metadata["interventions"])
    tensors = load_file(str(Path(directory) / WEIGHTS_FILE))
    try:
        missing, unexpected = control.load_state_dict(tensors, strict=False)
    except RuntimeError as err:  # shape mismatch, e.g. a full-block copy saved from another backbone
        raise ValueError(
            f"{directory}: the saved {metadata.get('form')} control does not fit this backbone (trained on "
            f"{metadata.get('backbone')!r}); load it with the backbone it was trained on. {err}"
        ) from err
    if missing or unexpected:
        raise ValueError(f"{directory}: tensors do not match the control (missing {missing}, unexpected {unexpected})")
    return control, metadata


@dataclass
class SteeredModel:
    """A backbone with a loaded control: score or generate at any multiplier."""

    model: nn.Module
    tokenizer: Any
    layout: ModelLayout
    control: nn.ModuleList
    metadata: dict[str, Any]

    @property
    def positions(self) -> str:
        """Steered positions the control was trained with."""
        return self.metadata.get("positions", "all")

    def logits(
        self,
        input_ids: torch.Tensor,
        multiplier: float,
        attention_mask: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of ``input_ids`` with the control at ``multiplier``.

        Args:
            input_ids: ``[B, T]`` tokens.
            multiplier: ``m`` for every row.
            attention_mask: optional padding mask.
            token_mask: ``[B, T]`` steered positions; required when the control was trained on only the
                prompt or only the completion (``self.positions``), ``None`` steers every position.
        """
        from .steering import steer

        if token_mask is None and self.positions != "all":
            raise ValueError(f"this control steers only {self.positions} tokens: pass token_mask")
        m = torch.full((input_ids.shape[0],), float(multiplier))
        with torch.no_grad(), steer(self.layout, self.control, m, token_mask=token_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def load_steered(directory: str | Path, backbone: str | None = None, **backbone_options: Any) -> SteeredModel:
    """Loads the backbone a control was trained on (or ``backbone``) and the control itself.

    Args:
        directory: a folder written by :func:`save_control`.
        backbone: override the backbone recorded in the metadata.
        **backbone_options: passed to :func:`lightning_split.backbone.load_backbone` (dtype, quantization…).
    """
    from .backbone import load_backbone

    metadata = read_metadata(directory)
    model, tokenizer = load_backbone(backbone or metadata["backbone"], **backbone_options)
    override = metadata.get("layout_override") or {}
    layout = discover_layout(model, **{k: v for k, v in override.items() if v})
    control, metadata = load_control(directory, layout)
    return SteeredModel(model, tokenizer, layout, control, metadata)
