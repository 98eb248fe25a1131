"""Vector controls (and DiffMean) as a GGUF control-vector file, the format of llama.cpp, EasySteer and repeng.

The file has ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the backbone's
``model_type``), ``controlvector.layer_count`` and one 1-D float32 tensor ``direction.N`` per steered block:
the vector added to the output of 0-based decoder block ``N`` (Hugging Face ``hidden_states[N+1]``), which is
where the framework's vector form adds ``m·v`` (the block's output, after its feed-forward residual add, at every
steered position). So ``direction.N = v`` and a runtime scale ``s`` gives the framework's ``m = s``; with a
baked multiplier ``direction.N = m·v`` and the runtime scale is 1. Keys under ``lightning_split.`` record how the
control was trained (runtimes ignore them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..artifacts import WEIGHTS_FILE, read_metadata
from ..errors import OptionError
from ..interventions import VectorIntervention

ARCHITECTURE = "controlvector"
META_PREFIX = "lightning_split."


@dataclass(frozen=True)
class ControlVectorFile:
    """What a GGUF control-vector file holds: the vectors by block, the model hint and the other metadata."""

    directions: dict[int, np.ndarray]
    model_hint: str
    metadata: dict[str, Any]


def load_vectors(control_dir: str | Path) -> dict[int, torch.Tensor]:
    """The vectors ``v`` of a saved vector-form control by block, read without loading its backbone.

    Raises:
        OptionError: the control is not of the vector form (the message says which exports it has).
    """
    metadata = read_metadata(control_dir)
    if metadata["form"] != VectorIntervention.form:
        raise OptionError(
            f"{Path(control_dir)} holds a {metadata['form']} control; a GGUF control vector holds only vector-form "
            "controls (vector, DiffMean): leave --format at its default for this form"
        )
    control = nn.ModuleList(
        VectorIntervention(cfg["layer"], cfg["hidden_size"], init_std=0.0) for cfg in metadata["interventions"]
    )
    control.load_state_dict(load_file(str(Path(control_dir) / WEIGHTS_FILE)))
    return {iv.layer: iv.vector.detach().float() for iv in control}  # type: ignore[union-attr]


def check_runtime_blocks(layers: list[int]) -> None:
    """Refuses block 0, which llama.cpp rejects (``invalid (zero) direction tensor layer index``)."""
    if 0 in layers:
        raise OptionError(
            "the control steers block 0, whose output llama.cpp cannot steer (it rejects a direction.0 tensor and "
            "skips the whole file); train the control at a later block (model.init_args.layers)"
        )


def training_metadata(metadata: dict[str, Any], multiplier: float | None) -> dict[str, Any]:
    """The ``lightning_split.*`` keys recorded in the file: how the control was trained and the baked strength."""
    return {
        "backbone": str(metadata.get("backbone")),
        "form": str(metadata["form"]),
        "objective": str(metadata.get("objective")),
        "positions": str(metadata.get("positions", "all")),
        "multipliers": json.dumps(metadata.get("multipliers", [])),
        # the grouped settings (controls saved before the settings were grouped: their flat "training" section)
        "settings": json.dumps(metadata.get("settings", metadata.get("training", {})), sort_keys=True),
        "multiplier": "runtime scale" if multiplier is None else repr(float(multiplier)),
    }


def write_control_vector(
    path: str | Path, directions: dict[int, torch.Tensor], model_hint: str, metadata: dict[str, str]
) -> None:
    """Writes a GGUF control-vector file (``direction.N`` float32 tensors, block order).

    Args:
        path: the output file.
        directions: the vector added to the output of block ``N``, by ``N``.
        model_hint: the backbone's ``model_type`` (``controlvector.model_hint``).
        metadata: extra string keys, written as ``lightning_split.<key>``.
    """
    import gguf

    writer = gguf.GGUFWriter(str(path), ARCHITECTURE)
    writer.add_string(f"{ARCHITECTURE}.model_hint", model_hint)
    writer.add_uint32(f"{ARCHITECTURE}.layer_count", len(directions))
    for key, value in metadata.items():
        writer.add_string(f"{META_PREFIX}{key}", value)
    for layer in sorted(directions):
        writer.add_tensor(f"direction.{layer}", directions[layer].detach().cpu().float().numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_control_vector(path: str | Path) -> ControlVectorFile:
    """Reads a GGUF control-vector file back (any writer's: llama.cpp's, repeng's or ours)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    if fields.get("general.architecture") != ARCHITECTURE:
        raise ValueError(f"{path}: general.architecture is {fields.get('general.architecture')!r}, not {ARCHITECTURE}")
    directions = {
        int(t.name.split(".", 1)[1]): np.asarray(t.data, dtype=np.float32).copy()
        for t in reader.tensors
        if t.name.startswith("direction.")
    }
    metadata = {k[len(META_PREFIX) :]: v for k, v in fields.items() if k.startswith(META_PREFIX)}
    return ControlVectorFile(directions, str(fields.get(f"{ARCHITECTURE}.model_hint")), metadata)


def export_control_vector(
    control_dir: str | Path, output: Path, model_hint: str, multiplier: float | None = None
) -> dict[int, torch.Tensor]:
    """Writes the vector control in ``control_dir`` as a GGUF control vector at ``output``; returns what it wrote.

    Args:
        control_dir: a saved vector-form control.
        output: the file to write (the caller makes it atomic).
        model_hint: ``controlvector.model_hint``.
        multiplier: ``m`` baked into the vectors (``None``: the runtime's scale is ``m``).
    """
    vectors = load_vectors(control_dir)
    check_runtime_blocks(sorted(vectors))
    directions = {layer: v if multiplier is None else v * multiplier for layer, v in vectors.items()}
    write_control_vector(output, directions, model_hint, training_metadata(read_metadata(control_dir), multiplier))
    return directions
