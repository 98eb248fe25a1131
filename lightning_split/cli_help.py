"""The help texts of ``lightning-split``.

- ``lightning-split --help``: what the project trains, with what, on what, from which configs; built from the
  registries (:data:`~lightning_split.objectives.OBJECTIVE_REGISTRY`,
  :data:`~lightning_split.interventions.FORM_REGISTRY`, :data:`~lightning_split.data.registry.DATASETS`), so a
  new objective, form or dataset appears here without an edit.
- ``lightning-split fit|validate|test|predict --help``: a screen, not LightningCLI's ~830 lines: the main options
  and the option names of each section (the model's read from its signature and option groups);
  ``--help full`` prints every option with its help (:class:`SteeringArgumentParser`, :class:`HelpAction`).
  A parse error prints a one-line usage instead of every option.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningArgumentParser

from .commands import commands
from .data.registry import DATASETS
from .interventions import FORM_REGISTRY
from .models import SteeringModule
from .models.options import OPTION_GROUPS
from .objectives import OBJECTIVE_REGISTRY

CONFIGS_DIR = Path("configs")
"""Where the shipped configs are looked for (relative to the working directory: the repository's root)."""

BASE_CONFIG = "base.yaml"
"""The settings the shipped configs share (each names it as its ``base``); not a run of its own."""


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
    base = configs_dir / BASE_CONFIG
    configs = sorted(p for p in configs_dir.rglob("*.yaml") if p != base) if configs_dir.is_dir() else []
    if configs:
        folders = sorted({str(p.parent) for p in configs})
        listing = "\n".join(f"  {folder}/" for folder in folders)
        parts.append(
            f"Shipped configs ({len(configs)}, one per objective x form x dataset; each extends {base}):\n"
            f"{listing}\n  e.g. lightning-split fit --config {configs_dir}/demo.yaml"
        )
    parts.append(
        "The main options: lightning-split fit --help. Every option: lightning-split fit --help full.\n"
        "A config in full: lightning-split fit --config X --print_config."
    )
    return "\n\n".join(parts)


MOST_USED_TRAINER_OPTIONS = (
    "max_epochs", "max_steps", "accelerator", "devices", "strategy", "precision", "accumulate_grad_batches",
    "gradient_clip_val", "limit_train_batches", "limit_val_batches", "default_root_dir", "logger", "callbacks",
)  # fmt: skip
"""The trainer options the short ``--help`` names (``--help full`` lists every one)."""

MAIN_OPTIONS = ("--config", "--print_config", "--run_name", "--ckpt_path", "--test_after_fit", "--seed_everything")
"""The options the short ``--help`` explains, one line each."""

WIDTH = 110


def is_run_parser(parser: argparse.ArgumentParser) -> bool:
    """Whether ``parser`` is one of ``fit``/``validate``/``test``/``predict`` (it has the trainer's options)."""
    return "--trainer.max_epochs" in parser._option_string_actions


def _first_sentence(text: str | None) -> str:
    return re.split(r"\.(?=\s|[A-Z])", " ".join((text or "").split()))[0].removesuffix(".")


def _wrapped(label: str, names: list[str], indent: str = "    ") -> str:
    """``label`` on its line, then ``names`` wrapped under it."""
    text = textwrap.fill(
        " ".join(names), WIDTH, initial_indent=indent, subsequent_indent=indent, break_long_words=False
    )
    return f"  {label}\n{text}"


def _model_options(model_class: type, indent: str = "    ") -> str:
    """The model's arguments on a line, then each option group (:data:`~lightning_split.models.options.OPTION_GROUPS`)
    as ``name.{field, ...}`` on its own."""
    plain, groups = [], []
    for name, param in inspect.signature(model_class.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if isinstance(param.default, OPTION_GROUPS):
            groups.append(f"{name}.{{{', '.join(f.name for f in fields(param.default))}}}")
        else:
            plain.append(name)
    lines = [" ".join(plain), *groups]
    return "\n".join(
        textwrap.fill(line, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ") for line in lines
    )


def short_help(parser: argparse.ArgumentParser, model_class: type = SteeringModule) -> str:
    """The ``--help`` of a run subcommand: what it does, the main options and each section's option names.

    Args:
        parser: the subcommand's parser.
        model_class: the base class of ``model.class_path`` (its arguments are listed).
    """
    prog = parser.prog.replace(" [options]", "")
    actions = parser._option_string_actions
    main = [(name, actions[name]) for name in MAIN_OPTIONS if name in actions]
    width = max(len(name) for name, _ in main) + 2
    lines = [
        textwrap.fill(
            f"{name:<{width}}{_first_sentence(action.help)}",
            WIDTH,
            initial_indent="  ",
            subsequent_indent=" " * (width + 2),
        )
        for name, action in main
    ]

    def section(prefix: str) -> list[str]:
        keys = [a.dest.removeprefix(prefix) for a in parser._actions if a.dest.startswith(prefix)]
        return list(dict.fromkeys(k for k in keys if "." not in k and not k.endswith("help")))

    trainer = section("trainer.")
    most_used = [name for name in MOST_USED_TRAINER_OPTIONS if name in trainer]
    parts = [
        format_usage(parser).strip(),
        parser.description or "",
        "Start from a config and change any option on the command line, e.g.\n"
        f"  {prog} --config configs/demo.yaml\n"
        f"  {prog} --config configs/smollm2/sentiment/split-lora.yaml --model.init_args.training.lr 0.02",
        "Main options:\n" + "\n".join(lines),
        "Sections (--<section>.<option> VALUE):\n"
        + "\n".join(
            [
                "  model (--model.init_args.<option>; explained: --model.help SteeringModule):\n"
                + _model_options(model_class),
                _wrapped("data (--data.<option>):", section("data.")),
                _wrapped(
                    f"trainer (--trainer.<option>; {len(trainer) - len(most_used)} more in --help full):", most_used
                ),
                _wrapped("tradeoff (--tradeoff.<option>: the trade-off sweep):", section("tradeoff.")),
            ]
        ),
        f"Every option with its help: {prog} --help full\nEvery value of a run: {prog} --config X --print_config",
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def format_usage(parser: argparse.ArgumentParser) -> str:
    """One usage line for a run subcommand (argparse's lists every option: hundreds of lines)."""
    prog = parser.prog.replace(" [options]", "")
    return f"usage: {prog} [-h [full]] [-c CONFIG] [--print_config[=flags]] [--<section>.<option> VALUE ...]\n"


class HelpAction(argparse._HelpAction):
    """``-h``/``--help`` with an optional ``full``: a run subcommand's short help, or every option."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        argparse.Action.__init__(
            self, option_strings, dest, default=argparse.SUPPRESS, nargs="?", metavar="full", help=help
        )

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        if values not in (None, "full"):
            parser.error(f"{option_string} takes nothing (a short list) or 'full' (every option), not {values!r}")
        if values == "full" or not is_run_parser(parser):
            parser.print_help()
        else:
            parser._print_message(short_help(parser), sys.stdout)
        parser.exit()


class SteeringArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with a short ``--help`` and a one-line usage for the run subcommands; ``--help full``
    lists every option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "add_help": False})
        self.add_argument("-h", "--help", action=HelpAction, help="show the main options (--help full: every one)")

    def format_usage(self) -> str:  # noqa: D102
        return format_usage(self) if is_run_parser(self) else super().format_usage()
