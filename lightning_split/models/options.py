"""Checks of :class:`~lightning_split.models.steering_module.SteeringModule` options made before any model loads.

Each check names the option (as written in a config's ``model.init_args``) and the values it accepts, so a bad
value fails in seconds instead of after the backbone has loaded. The layer is checked against the number of
blocks read from the backbone's config (:func:`~lightning_split.backbone.backbone_num_layers`), which also
fails at once when a hub model cannot be had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, get_args

from ..backbone import AttnImplementation, Dtype, Quantization, backbone_num_layers
from ..errors import OptionError
from ..interventions import FormOptions
from ..objectives import Objective
from ..steering import POSITIONS


def _option(name: str) -> str:
    return f"model option {name} (model.init_args.{name})"


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Refuses ``value`` unless it is one of ``choices``.

    Raises:
        OptionError: naming the option and the choices.
    """
    if value not in choices:
        raise OptionError(f"{_option(name)} is {value!r}; choose one of {list(choices)}")


def check_number(name: str, value: float, *, positive: bool = False, non_negative: bool = False, why: str = "") -> None:
    """Refuses a value that is not a finite number (and, if asked, not positive or not non-negative).

    Args:
        name: the option.
        value: its value (one item of a list option).
        positive: require ``value > 0``.
        non_negative: require ``value >= 0``.
        why: appended to the message.

    Raises:
        OptionError: naming the option and the range it must be in.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    need = "a number > 0" if positive else "a number >= 0" if non_negative else "a finite number"
    if ok and positive:
        ok = value > 0
    elif ok and non_negative:
        ok = value >= 0
    if not ok:
        raise OptionError(f"{_option(name)} has the value {value!r}; it must be {need}{why}")


def check_layers(backbone: str, layer: int | None, layers: Sequence[int] | None, num_layers: int | None) -> None:
    """Refuses a steered block outside ``0..num_layers-1`` (or negative when the block count is unknown).

    Args:
        backbone: the backbone, for the message.
        layer: the ``layer`` option.
        layers: the ``layers`` option.
        num_layers: the backbone's block count, or None when its config does not give it.

    Raises:
        OptionError: naming the option, the backbone's block count and the valid range.
    """
    if layers is not None and not layers:
        raise OptionError(f"{_option('layers')} is empty; give at least one block, or leave it unset")
    if layers is not None and len(set(layers)) != len(layers):
        raise OptionError(f"{_option('layers')} is {list(layers)}: each block may appear once")
    named = [("layers", v) for v in layers] if layers else [("layer", layer)] if layer is not None else []
    for name, value in named:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"{_option(name)} is {value!r}; it must be a block index (an integer)")
        if value < 0 or (num_layers is not None and value >= num_layers):
            valid = f"0..{num_layers - 1}" if num_layers is not None else ">= 0"
            blocks = f"{backbone} has {num_layers} blocks, so " if num_layers is not None else ""
            raise OptionError(f"{_option(name)} is {value}: {blocks}a block index must be {valid}")


def check_steering_options(options: dict[str, Any]) -> None:
    """Checks every ``SteeringModule`` option that can be checked without loading the backbone.

    Types (``objective``; ``form``, whose options check their own ranges), choices (``positions``,
    ``nll_reduction``, ``dtype``, ``quantization``, ``attn_implementation``; the CLI's parser enforces them too,
    through the ``Literal`` types), number ranges (``lr > 0``, ``weight_decay >= 0``, ...), and the layers against
    the block count in the backbone's config (skipped with a custom ``blocks_path``).

    Args:
        options: the module's ``__init__`` arguments by name.

    Raises:
        OptionError: the first bad option, named.
        BackboneLoadError: the hub cannot be reached or the model is not there.
        FileNotFoundError: the backbone path does not exist.
    """
    if options["objective"] is not None and not isinstance(options["objective"], Objective):
        raise OptionError(
            f"{_option('objective')} is {options['objective']!r}; give an Objective, e.g. SPLIT(gamma=5.0)"
        )
    if not isinstance(options["form"], FormOptions):
        raise OptionError(f"{_option('form')} is {options['form']!r}; give a form's options, e.g. LoRAOptions(rank=4)")
    check_choice("positions", options["positions"], POSITIONS)
    check_choice("nll_reduction", options["nll_reduction"], ("mean", "sum"))
    check_choice("dtype", options["dtype"], get_args(Dtype))
    check_choice("quantization", options["quantization"], [None, *get_args(Quantization)])
    check_choice("attn_implementation", options["attn_implementation"], [None, *get_args(AttnImplementation)])
    for name in ("lr", "temperature"):
        check_number(name, options[name], positive=True)
    check_number("weight_decay", options["weight_decay"], non_negative=True)
    check_number("eval_multiplier", options["eval_multiplier"])
    value = options["max_new_tokens"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{_option('max_new_tokens')} is {value!r}; it must be an integer >= 1")
    for value in options["multipliers"] or []:
        check_number("multipliers", value, positive=True, why=" (the sign comes from the objective's passes)")
    for value in options["predict_multipliers"] or []:
        check_number("predict_multipliers", value)
    num_layers = None if options["blocks_path"] else backbone_num_layers(options["backbone"], options["cache_dir"])
    check_layers(options["backbone"], options["layer"], options["layers"], num_layers)
