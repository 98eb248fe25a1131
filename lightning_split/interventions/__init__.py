"""Control forms: each is an :class:`Intervention` producing ``ΔW x + Δb`` at one site of the network.

Every module of this folder is imported here, so a form is one file: its :class:`Intervention` subclass
registers itself (:data:`FORM_REGISTRY`) when the class is defined.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields
from typing import Any

from torch import nn

from ..layout import ModelLayout
from .base import FORM_REGISTRY, FormOptions, HookCall, Intervention, Site, form_class, form_of, form_options
from .full_block import FullBlockIntervention, FullBlockOptions
from .local_weight import LocalWeightIntervention, LocalWeightOptions
from .lora import LoRAIntervention, LoRAOptions
from .reft import ReFTIntervention, ReFTOptions
from .vector import VectorIntervention, VectorOptions

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

FORMS: tuple[str, ...] = tuple(FORM_REGISTRY)
"""The forms shipped in this package (forms registered later, e.g. from a user's module, are in
:data:`FORM_REGISTRY` but not here)."""


def build_intervention(options: FormOptions, layout: ModelLayout, layer: int) -> Intervention:
    """Builds a fresh intervention of the form ``options`` belong to at block ``layer``.

    Args:
        options: the form's options, e.g. ``LoRAOptions(rank=8)``.
        layout: the backbone's layout (gives the sizes and, for ``full``, the block to copy).
        layer: block index.
    """
    layout.block(layer)  # range check with a clear message
    return form_of(options).build(options, layout, layer)


def build_control(options: FormOptions, layout: ModelLayout, layers: list[int]) -> nn.ModuleList:
    """Builds the control: one intervention of the form ``options`` belong to per layer in ``layers``."""
    return nn.ModuleList(build_intervention(options, layout, layer) for layer in layers)


def intervention_from_config(config: dict[str, Any], layout: ModelLayout) -> Intervention:
    """Rebuilds an intervention from :meth:`Intervention.config` (weights are loaded separately)."""
    options_class = form_class(config["form"]).options
    options = options_class(**{f.name: config[f.name] for f in fields(options_class) if f.name in config})  # type: ignore[arg-type]
    intervention = build_intervention(options, layout, int(config["layer"]))
    expected = {k: v for k, v in intervention.config().items() if k in config}
    if expected != config:
        raise ValueError(
            f"saved {config['form']} control does not fit this backbone: saved {config}, this model gives "
            f"{intervention.config()}; load it with the backbone it was trained on"
        )
    return intervention


__all__ = [
    "FORMS",
    "FORM_REGISTRY",
    "FormOptions",
    "FullBlockIntervention",
    "FullBlockOptions",
    "HookCall",
    "Intervention",
    "LoRAIntervention",
    "LoRAOptions",
    "LocalWeightIntervention",
    "LocalWeightOptions",
    "ReFTIntervention",
    "ReFTOptions",
    "Site",
    "VectorIntervention",
    "VectorOptions",
    "build_control",
    "build_intervention",
    "form_class",
    "form_of",
    "form_options",
    "intervention_from_config",
]
