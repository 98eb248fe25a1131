"""The text of ``lightning-split --help``: what the project trains, with what, on what, from which configs.

Built from the registries (:data:`~lightning_split.objectives.OBJECTIVE_REGISTRY`,
:data:`~lightning_split.interventions.FORM_REGISTRY`, :data:`~lightning_split.data.registry.DATASETS`), so a new
objective, form or dataset appears here without an edit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jsonargparse import DefaultHelpFormatter

from .commands import commands
from .data.registry import DATASETS
from .interventions import FORM_REGISTRY
from .objectives import OBJECTIVE_REGISTRY

CONFIGS_DIR = Path("configs")
"""Where the shipped configs are looked for (relative to the working directory: the repository's root)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help layout with the description's line breaks kept (it holds tables)."""


def _summary(cls: type) -> str:
    """The first line of a class's docstring."""
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def _entries(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {text}" for name, text in rows)


def cli_description(configs_dir: Path = CONFIGS_DIR) -> str:
    """The description printed by ``lightning-split --help``.

    Args:
        configs_dir: folder of shipped configs to list (skipped when it does not exist, e.g. an installed wheel
            run outside the repository).
    """
    objectives = [(f"{cls.__name__} ({name})", _summary(cls)) for name, cls in OBJECTIVE_REGISTRY.items()]
    objectives.append(("DiffMeanSteering", "DiffMean (CAA): a fitted vector, no training (model.class_path)"))
    forms = [(f"{cls.options.__name__} ({name})", _summary(cls)) for name, cls in FORM_REGISTRY.items()]
    datasets = [(name, spec.description) for name, spec in DATASETS.items()]
    datasets.append(("<file>", "a .jsonl, .csv or .parquet file, or train_file/val_file/test_file per split"))
    parts = [
        "Train and evaluate steering controls (Δh = m·(ΔW h + Δb)) on polarity pairs with PyTorch Lightning.",
        "Objectives (model.init_args.objective: {class_path: lightning_split.objectives.<name>}):\n"
        + _entries(objectives),
        "Forms (model.init_args.form: {class_path: lightning_split.interventions.<options>}):\n" + _entries(forms),
        "Datasets (data.dataset):\n" + _entries(datasets),
    ]
    others = [(name, command.help) for name, command in commands().items()]
    if others:
        parts.append("Other commands (lightning-split <command> --help for each):\n" + _entries(others))
    configs = sorted(configs_dir.rglob("*.yaml")) if configs_dir.is_dir() else []
    if configs:
        folders = sorted({str(p.parent) for p in configs})
        listing = "\n".join(f"  {folder}/" for folder in folders)
        parts.append(
            f"Shipped configs ({len(configs)}, one per objective x form x dataset):\n{listing}\n"
            f"  e.g. lightning-split fit --config {configs_dir}/demo.yaml"
        )
    parts.append(
        "Every option: lightning-split fit --help. A config in full: lightning-split fit --config X --print_config."
    )
    return "\n\n".join(parts)
