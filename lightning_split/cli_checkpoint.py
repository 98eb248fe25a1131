"""Checks ``--ckpt_path`` against the parsed CLI config before anything runs or is written.

LightningCLI merges a checkpoint's hyper-parameters over the parsed config, so ``--ckpt_path`` with the
checkpoint of another run silently turns the run into that one (a vector checkpoint given to a LoRA config
trains a vector and writes it into the LoRA run's folder). :func:`check_checkpoint` refuses a checkpoint
whose model class, backbone, form (class or options), objective class or layers differ from the config's,
a file that cannot be read or was not written by lightning_split, and a checkpoint whose settings this version
does not take (written before the module's options were grouped), naming the file, the setting and what to do.
The other settings it reports, one option at a time (``training.lr``), since the checkpoint's values replace
the config's.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from .models.steering_module import CHECKPOINT_KEY, DEFAULT_OBJECTIVE

IDENTITY_SETTINGS = ("backbone", "form", "objective", "layer", "layers")
"""Model settings that make a control what it is: a checkpoint must agree with the config on each (for the
``form``, its class and every option; for the ``objective``, its class; its coefficients may change)."""

TRAINER_RESOLVED = ("best", "hpc")
"""``--ckpt_path`` values the trainer resolves itself (``registry`` ones too)."""


class CheckpointError(ValueError):
    """A ``--ckpt_path`` that this run cannot use (the message names the file and what to do)."""


def import_class(class_path: str) -> type:
    """The class a config's ``class_path`` names."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def find_last(callbacks: list[dict[str, Any]] | None) -> Path | None:
    """The newest ``last.ckpt`` in the folders of the config's ``ModelCheckpoint`` callbacks (as the trainer
    resolves ``--ckpt_path last``); ``None`` when no folder is set or none holds one."""
    found: list[Path] = []
    for callback in callbacks or []:
        dirpath = (callback.get("init_args") or {}).get("dirpath")
        if str(callback.get("class_path", "")).endswith("ModelCheckpoint") and dirpath and Path(dirpath).is_dir():
            found += [p for p in Path(dirpath).iterdir() if p.suffix == ".ckpt" and p.stem.startswith("last")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_checkpoint(ckpt_path: str, trainer_config: dict[str, Any]) -> Path | None:
    """The checkpoint file ``--ckpt_path`` names, or ``None`` when the trainer resolves it (``best``, ``hpc``,
    ``registry``, or ``last`` without a ``last.ckpt`` in a configured checkpoint folder).

    Raises:
        CheckpointError: a path that is not a file.
    """
    if ckpt_path in TRAINER_RESOLVED or ckpt_path.startswith("registry"):
        return None
    if ckpt_path == "last":
        return find_last(trainer_config.get("callbacks"))
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"--ckpt_path {ckpt_path}: no such file; pass a .ckpt written by `lightning-split fit`")
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Loads a checkpoint (``weights_only``) and checks that lightning_split wrote it.

    Raises:
        CheckpointError: the file cannot be read, or holds no lightning_split control metadata.
    """
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # torch raises many types (with long texts) for a damaged or foreign file
        raise CheckpointError(
            f"--ckpt_path {path}: cannot read this checkpoint ({type(err).__name__}): the file is damaged, "
            "or not a checkpoint of plain tensors and values: pass a .ckpt written by `lightning-split fit`"
        ) from err
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CheckpointError(
            f"--ckpt_path {path}: this checkpoint was not written by lightning_split (no {CHECKPOINT_KEY!r} "
            "control metadata): pass a .ckpt written by `lightning-split fit`"
        )
    return checkpoint


def _spec_class(spec: Any) -> Any:
    """The class a ``{class_path, init_args}`` setting names (a plain value stays itself)."""
    return import_class(spec["class_path"]) if isinstance(spec, dict) and "class_path" in spec else spec


def _identity(key: str, value: Any) -> Any:
    """What must match for ``key``: the form's class and options, the objective's class, else the value."""
    if key == "form" and isinstance(value, dict):
        return _spec_class(value), dict(value.get("init_args") or {})
    if key == "objective":
        return _spec_class(value) if value is not None else _spec_class({"class_path": DEFAULT_OBJECTIVE})
    return value


def _show(value: Any) -> Any:
    """A ``{class_path, init_args}`` setting as ``Name(option=value, ...)``; other values unchanged."""
    if not (isinstance(value, dict) and "class_path" in value):
        return value
    options = ", ".join(f"{k}={v!r}" for k, v in (value.get("init_args") or {}).items())
    return f"{str(value['class_path']).rpartition('.')[2]}({options})"


def _describe(hparams: dict[str, Any], class_path: str) -> str:
    settings = ", ".join(f"{k}={_show(hparams.get(k))!r}" for k in IDENTITY_SETTINGS if k in hparams)
    return f"{class_path.rpartition('.')[2]}({settings})"


def _options(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings with each option group's fields as ``group.field`` (``training.lr``); the form and the
    objective (``{class_path, init_args}``) stay whole."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and "class_path" not in value:
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def check_checkpoint(path: Path, model_config: dict[str, Any]) -> list[str]:
    """Refuses a checkpoint of another model; returns a note for each other setting the checkpoint replaces.

    Args:
        path: the checkpoint file.
        model_config: the parsed ``model`` section (``class_path`` and ``init_args``).

    Raises:
        CheckpointError: the checkpoint cannot be read, was not written by lightning_split, has settings this
            version does not take, or its model class, backbone, form (class or options), objective class or
            layer(s) differ from the config's.
    """
    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    saved_class = hparams.pop("_class_path", None)
    hparams.pop("_instantiator", None)
    init = dict(model_config.get("init_args") or {})
    class_path = str(model_config.get("class_path", ""))
    differences: list[tuple[str, Any, Any]] = []
    if saved_class is not None and import_class(saved_class) is not import_class(class_path):
        differences.append(("model.class_path", saved_class, class_path))
    differences += [
        (k, hparams[k], init.get(k))
        for k in IDENTITY_SETTINGS
        if k in hparams and _identity(k, hparams[k]) != _identity(k, init.get(k))
    ]
    unknown = sorted(set(hparams) - set(init)) if init else []
    if unknown and not differences:
        raise CheckpointError(
            f"--ckpt_path {path} has settings this version of lightning_split does not take ({', '.join(unknown)}; "
            "it was written before the model's options were grouped into training, evaluation, generation and "
            "backbone_options): it cannot be resumed; start a new run, or load the control it saved with "
            "lightning_split.load_steered"
        )
    if differences:
        setting, saved, configured = differences[0]
        others = "".join(f"; {k}: {_show(a)!r} vs {_show(b)!r}" for k, a, b in differences[1:])
        raise CheckpointError(
            f"--ckpt_path {path} belongs to another run: its {setting} is {_show(saved)!r}, this config's is "
            f"{_show(configured)!r}{others}. A checkpoint resumes, validates, tests or predicts only the run it "
            f"came from ({_describe(hparams, saved_class or class_path)}): use that run's config, or drop "
            "--ckpt_path to start a new run"
        )
    configured = _options(init)
    return [
        f"--ckpt_path {path}: the checkpoint's {k}={v!r} replaces the config's {configured[k]!r}"
        for k, v in _options(hparams).items()
        if k in configured and configured[k] != v and (k not in IDENTITY_SETTINGS or k == "objective")
    ]


__all__ = [
    "IDENTITY_SETTINGS",
    "CheckpointError",
    "check_checkpoint",
    "find_last",
    "import_class",
    "read_checkpoint",
    "resolve_checkpoint",
]
