"""Control forms: each is an :class:`Intervention` producing ``ΔW x + Δb`` at one site of the network."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..layout import ModelLayout
from .base import HookCall, Intervention, Site
from .full_block import FullBlockIntervention
from .local_weight import LocalWeightIntervention
from .lora import LoRAIntervention
from .reft import ReFTIntervention
from .vector import VectorIntervention

FORMS: tuple[str, ...] = ("vector", "lora", "local_weight", "reft", "full")


def build_intervention(form: str, layout: ModelLayout, layer: int, **options: Any) -> Intervention:
    """Builds a fresh intervention of ``form`` at block ``layer`` of the model described by ``layout``.

    Args:
        form: one of :data:`FORMS`.
        layout: the backbone's layout (gives the sizes and, for ``full``, the block to copy).
        layer: block index.
        **options: form options: ``rank`` (lora, reft), ``alpha`` and ``dropout`` (lora), ``init_std``
            (vector). Options a form does not use are ignored.
    """
    layout.block(layer)  # range check with a clear message
    if form == "vector":
        return VectorIntervention(layer, layout.hidden_size, init_std=options.get("init_std", 0.01))
    if form == "local_weight":
        return LocalWeightIntervention(layer, layout.intermediate_size, layout.hidden_size)
    if form == "lora":
        return LoRAIntervention(
            layer,
            layout.intermediate_size,
            layout.hidden_size,
            rank=options.get("rank", 4),
            alpha=options.get("alpha"),
            dropout=options.get("dropout", 0.0),
        )
    if form == "reft":
        return ReFTIntervention(layer, layout.hidden_size, rank=options.get("rank", 4))
    if form == "full":
        return FullBlockIntervention(layer, layout.blocks[layer])
    raise ValueError(f"unknown control form {form!r}; choose one of {FORMS}")


def build_control(form: str, layout: ModelLayout, layers: list[int], **options: Any) -> nn.ModuleList:
    """Builds the control: one intervention of ``form`` per layer in ``layers``."""
    return nn.ModuleList(build_intervention(form, layout, layer, **options) for layer in layers)


def intervention_from_config(config: dict[str, Any], layout: ModelLayout) -> Intervention:
    """Rebuilds an intervention from :meth:`Intervention.config` (weights are loaded separately)."""
    options = {k: v for k, v in config.items() if k not in ("form", "layer")}
    intervention = build_intervention(config["form"], layout, int(config["layer"]), **options)
    expected = {k: v for k, v in intervention.config().items() if k in config}
    if expected != config:
        raise ValueError(
            f"saved {config['form']} control does not fit this backbone: saved {config}, this model gives "
            f"{intervention.config()}; load it with the backbone it was trained on"
        )
    return intervention


__all__ = [
    "FORMS",
    "FullBlockIntervention",
    "HookCall",
    "Intervention",
    "LoRAIntervention",
    "LocalWeightIntervention",
    "ReFTIntervention",
    "Site",
    "VectorIntervention",
    "build_control",
    "build_intervention",
    "intervention_from_config",
]
