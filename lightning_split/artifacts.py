"""Saving and loading a trained control: ``control.safetensors`` plus ``control.json``.

The JSON records the form, layers, backbone, positions, objective, the module's settings and multiplier grid;
the tensors are read back with safetensors (no unpickling). :func:`load_steered` rebuilds the backbone and
the control in a new process, ready to score or generate at any multiplier.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .data.tokenize import PairTokenizer
from .files import staged_output
from .generation import generate_steered
from .interventions import intervention_from_config
from .layout import ModelLayout, discover_layout

CONTROL_DIRNAME = "control"
WEIGHTS_FILE = "control.safetensors"
CONFIG_FILE = "control.json"
FORMAT_VERSION = 1

_SETTING_KEYS = ("form", "objective", "training", "evaluation", "backbone_options")
"""The module's hyper-parameters a saved control records under ``settings`` (its option groups as dicts)."""


def control_metadata(
    control: nn.ModuleList, hparams: dict[str, Any], objective: str, multipliers: list[float]
) -> dict[str, Any]:
    """Builds the JSON-able description of a control and how it was trained.

    ``settings`` holds the module's settings as its hyper-parameters group them: the form's options and the
    objective's arguments (``{class_path, init_args}``) and the ``training``, ``evaluation`` and
    ``backbone_options`` groups. (Controls saved before the settings were grouped have a flat ``training``
    section instead; loading reads neither.)
    """
    backbone_options = hparams.get("backbone_options") or {}
    return {
        "format_version": FORMAT_VERSION,
        "backbone": hparams.get("backbone"),
        "form": control[0].form,
        "positions": hparams.get("positions", "all"),
        "objective": objective,
        "multipliers": [float(m) for m in multipliers],
        "interventions": [iv.config() for iv in control],
        "layout_override": {k: backbone_options.get(k) for k in ("blocks_path", "down_proj_path")},
        "settings": {k: hparams.get(k) for k in _SETTING_KEYS if k in hparams},
    }


def control_sha256(directory: str | Path) -> str:
    """The SHA-256 of a saved control's two files (``control.json`` then ``control.safetensors``): what an
    evaluation records, so that its results are matched to the control they judged."""
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        digest.update((Path(directory) / name).read_bytes())
    return digest.hexdigest()


def trained_positions(metadata: dict[str, Any]) -> str:
    """The positions a saved control was trained to steer (``all``, ``prompt`` or ``completion``), read from its
    metadata; ``all`` when it records none."""
    return metadata.get("positions", "all")


def trained_nll_reduction(metadata: dict[str, Any]) -> str | None:
    """The NLL reduction a saved control was evaluated with (``settings.evaluation``; the flat ``training``
    section of controls saved before the settings were grouped), ``None`` if it records none."""
    grouped = ((metadata.get("settings") or {}).get("evaluation") or {}).get("nll_reduction")
    return grouped or (metadata.get("training") or {}).get("nll_reduction")


class ControlFileError(ValueError):
    """A saved control folder is missing a file or holds a damaged one; the message names the file and the remedy."""


_REMEDY = "copy the control folder again from where it came, or train again to re-create it"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_control(directory: str | Path, control: nn.ModuleList, metadata: dict[str, Any]) -> Path:
    """Writes the control's tensors and metadata into ``directory``; returns the directory.

    Both files are written into a temporary folder beside ``directory``, which then takes its place
    (:func:`~lightning_split.files.staged_output`): an earlier control there stays whole until the new one is
    complete. The folder and files get the ordinary permissions (``0777``/``0666`` less the umask), readable by
    colleagues like any other file.

    Raises:
        ControlFileError: ``directory`` exists and is not a saved control (checked first; it is never touched).
    """
    directory = Path(directory)
    if directory.exists() and not (directory / CONFIG_FILE).is_file() and any(directory.iterdir()):
        raise ControlFileError(f"{directory} exists and is not a saved control; save the control elsewhere")
    tensors = {k: v.detach().contiguous().cpu() for k, v in control.state_dict().items()}
    with staged_output(directory) as staged:
        staged.mkdir()
        save_file(tensors, str(staged / WEIGHTS_FILE), metadata={"format": "lightning_split"})
        os.chmod(staged / WEIGHTS_FILE, 0o666 & ~_umask())  # safetensors writes it 0600
        (staged / CONFIG_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """Reads ``control.json`` of a saved control, with a clear error when it is not one.

    Raises:
        FileNotFoundError: there is no ``control.json``.
        ControlFileError: it is not valid JSON, not of this format, or lacks the backbone or interventions.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a saved lightning_split control")
    try:
        metadata = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ControlFileError(f"{path} is damaged (not valid JSON: {err}); {_REMEDY}") from err
    if not isinstance(metadata, dict):
        raise ControlFileError(f"{path} holds a {type(metadata).__name__}, not a control's description; {_REMEDY}")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ControlFileError(
            f"{path}: unsupported control format {metadata.get('format_version')!r} (this version reads "
            f"{FORMAT_VERSION}); load it with the lightning_split version that saved it"
        )
    missing = [key for key in ("backbone", "form", "interventions") if not metadata.get(key)]
    if missing:
        raise ControlFileError(f"{path} lacks {missing}; {_REMEDY}")
    return metadata


def check_weights(directory: str | Path) -> None:
    """Checks that ``control.safetensors`` is there and whole (its header and the data it describes).

    Only the header is read, so a truncated or foreign file is refused before any backbone is loaded.

    Raises:
        ControlFileError: the file is missing or damaged; the message names it and the remedy.
    """
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise ControlFileError(f"{path} not found: the control's tensors are missing; {_REMEDY}")
    try:
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except (SafetensorError, OSError) as err:
        raise ControlFileError(f"{path} is damaged (truncated or not a safetensors file: {err}); {_REMEDY}") from err


def load_control(directory: str | Path, layout: ModelLayout) -> tuple[nn.ModuleList, dict[str, Any]]:
    """Rebuilds a saved control for the backbone described by ``layout`` and loads its tensors.

    Each intervention is put on the device of the block it edits (the backbone may be on a GPU, or spread
    over several); the control stays float32.
    """
    metadata = read_metadata(directory)
    check_weights(directory)
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
    for intervention in control:
        intervention.to(block_device(layout, intervention.layer))
    return control, metadata


def block_device(layout: ModelLayout, layer: int) -> torch.device:
    """The device holding block ``layer``'s weights (CPU for a block without any)."""
    block = layout.block(layer)
    first = next(itertools.chain(block.parameters(), block.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


@dataclass
class SteeredModel:
    """A backbone with a loaded control: score (:meth:`logits`) or generate (:meth:`generate`) at any multiplier."""

    model: nn.Module
    tokenizer: Any
    layout: ModelLayout
    control: nn.ModuleList
    metadata: dict[str, Any]

    @property
    def positions(self) -> str:
        """Steered positions the control was trained with (:func:`trained_positions`)."""
        return trained_positions(self.metadata)

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

    def generate(
        self,
        prompts: list[str] | str,
        multipliers: list[float] | float = 1.0,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[dict[str, Any]]:
        """Steered replies to every (prompt, multiplier) combination, decoded together in one batch.

        Each prompt is a user turn, rendered with the tokenizer's chat template as in training; each row
        carries its own multiplier and the control steers the positions it was trained with
        (``self.positions``). Replies stop at the end of the turn or after ``max_new_tokens`` tokens.

        Args:
            prompts: one prompt or several.
            multipliers: one ``m`` or several; 0 gives the unsteered backbone's reply.
            max_new_tokens: most generated tokens per reply.
            do_sample: sample instead of greedy decoding.
            temperature: sampling temperature (only with ``do_sample``).
            seed: seeds the sampling (``None``: torch's current RNG state).

        Returns:
            One dict per combination, ``{"prompt", "multiplier", "text"}``, prompt by prompt and, for each
            prompt, in the order of ``multipliers``.
        """
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        grid = [float(multipliers)] if isinstance(multipliers, (int, float)) else [float(m) for m in multipliers]
        if not texts or not grid:
            raise ValueError(f"generate needs at least one prompt and one multiplier (got {texts!r}, {grid!r})")
        encoder = PairTokenizer(self.tokenizer)
        prompt_ids = [encoder.prompt_ids(text) for text in texts]
        rows = [(i, m) for i in range(len(texts)) for m in grid]
        replies = generate_steered(
            self.model,
            self.tokenizer,
            self.layout,
            self.control,
            [prompt_ids[i] for i, _ in rows],
            torch.tensor([m for _, m in rows]),
            self.positions,  # type: ignore[arg-type]
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            seed=seed,
        )
        return [{"prompt": texts[i], "multiplier": m, "text": reply} for (i, m), reply in zip(rows, replies)]


def load_steered(directory: str | Path, backbone: str | None = None, **backbone_options: Any) -> SteeredModel:
    """Loads the backbone a control was trained on (or ``backbone``) and the control itself.

    Args:
        directory: a folder written by :func:`save_control`.
        backbone: override the backbone recorded in the metadata.
        **backbone_options: passed to :func:`lightning_split.backbone.load_backbone` (dtype, quantization,
            device_map…). The control goes to the device of the blocks it edits.

    Raises:
        FileNotFoundError: ``directory`` is not a saved control.
        ControlFileError: ``control.json`` or ``control.safetensors`` is missing or damaged (checked before the
            backbone loads).
    """
    from .backbone import load_backbone

    metadata = read_metadata(directory)
    check_weights(directory)  # both files are checked before the backbone loads
    model, tokenizer = load_backbone(backbone or metadata["backbone"], **backbone_options)
    override = metadata.get("layout_override") or {}
    layout = discover_layout(model, **{k: v for k, v in override.items() if v})
    control, metadata = load_control(directory, layout)
    return SteeredModel(model, tokenizer, layout, control, metadata)
