"""Training objectives: a loss over the steered log-likelihoods of polarity pairs.

Every module of this folder is imported here, so an objective is one file: its :class:`Objective` subclass
registers itself (:data:`OBJECTIVE_REGISTRY`) and a config picks it by class path, e.g.
``objective: {class_path: lightning_split.objectives.SPLIT, init_args: {gamma: 5.0}}``.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import ADD, OBJECTIVE_REGISTRY, SUB, SUB_ABLATE, Objective, Pass
from .dpo import DPO
from .reps import RePS
from .sft import SFT
from .split import SPLIT

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

OBJECTIVES: tuple[str, ...] = tuple(OBJECTIVE_REGISTRY)
"""The objectives shipped in this package (objectives registered later, e.g. from a user's module, are in
:data:`OBJECTIVE_REGISTRY` but not here)."""

__all__ = [
    "ADD",
    "DPO",
    "OBJECTIVES",
    "OBJECTIVE_REGISTRY",
    "SFT",
    "SPLIT",
    "SUB",
    "SUB_ABLATE",
    "Objective",
    "Pass",
    "RePS",
]
