"""Subcommands of ``lightning-split`` beyond LightningCLI's ``fit|validate|test|predict``.

Each module in this package is one subcommand named after the module (``export.py`` → ``lightning-split export``;
an underscore becomes a hyphen). A module defines:

- ``HELP``: one line for ``lightning-split --help``;
- ``main(argv: list[str]) -> None``: runs the subcommand on the arguments after its name. Bad input raises one of
  :data:`lightning_split.cli.USER_ERRORS` (printed alone, exit status 2) or exits through its own parser.

Adding a subcommand is adding a module here; :func:`commands` finds it. ``lightning-split --help`` imports every
module for its ``HELP``, so a module imports its heavy dependencies (a web server, a model) inside ``main``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, its one-line help and its entry point."""

    name: str
    help: str
    main: Callable[[list[str]], None]


def commands() -> dict[str, Command]:
    """Every subcommand in this package, by name (imported on demand: ``lightning-split fit`` imports none)."""
    found: dict[str, Command] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        name = info.name.replace("_", "-")
        found[name] = Command(name, str(module.HELP), module.main)
    return found


def command_names() -> list[str]:
    """The subcommands' names without importing their modules."""
    return sorted(i.name.replace("_", "-") for i in pkgutil.iter_modules(__path__) if not i.name.startswith("_"))
