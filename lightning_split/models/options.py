"""The options of :class:`~lightning_split.models.steering_module.SteeringModule`, grouped by concern, and the
checks made on them before any model loads.

The module takes the identity of the control at the top level (``backbone``, ``objective``, ``form``, ``layer``/
``layers``, ``positions``) and four small groups, each a frozen dataclass a config writes as a mapping:

- ``training``: :class:`TrainingOptions` (multiplier grid, learning rate, weight decay);
- ``evaluation``: :class:`EvaluationOptions` (the multiplier of the validation/test metrics, the NLL reduction);
- ``generation``: :class:`GenerationOptions` (what ``predict`` generates);
- ``backbone_options``: :class:`BackboneOptions` (how the backbone is loaded and read).

Closed sets are ``Literal`` types, so the CLI's parser refuses a bad value while it parses; ranges are checked
when a group is built (``__post_init__``), and the layers against the block count in the backbone's config
(:func:`~lightning_split.backbone.backbone_num_layers`) when the module is built, which also fails at once when a
hub model cannot be had. Every message names the option as a config writes it (``model.init_args.training.lr``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar, get_args

from ..backbone import AttnImplementation, Dtype, Quantization, backbone_num_layers
from ..errors import OptionError
from ..interventions import FormOptions
from ..metrics import DEFAULT_REDUCTION, Reduction
from ..objectives import Objective
from ..steering import POSITIONS

DEFAULT_MULTIPLIERS: tuple[float, ...] = tuple(round(0.2 * k, 1) for k in range(1, 11))
"""Training grid ``{0.2, 0.4, …, 2.0}`` (the released LoRA/local-weight grid; see ``TrainingOptions``)."""


def _option(name: str) -> str:
    """``model option lr (model.init_args.training.lr)`` for ``training.lr``."""
    return f"model option {name.rpartition('.')[2]} (model.init_args.{name})"


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
        name: the option, with its group (``training.lr``).
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


@dataclass(frozen=True)
class TrainingOptions:
    """How the control is trained (``model.init_args.training``).

    Args:
        multipliers: training grid; each example draws its ``m`` uniformly from it. The released vector grid
            is ``{2, 4, …, 20}``; only the product ``m·v`` matters, so the default ``{0.2, …, 2.0}`` is the
            same family with ``v`` ten times longer and keeps ``m = 1`` inside the grid.
        lr: AdamW learning rate (linear decay to 0 over the run, no warm-up).
        weight_decay: AdamW weight decay.
    """

    multipliers: list[float] = field(default_factory=lambda: list(DEFAULT_MULTIPLIERS))
    lr: float = 0.01
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if not self.multipliers:
            raise OptionError(f"{_option('training.multipliers')} is empty; give at least one multiplier")
        for value in self.multipliers:
            check_number(
                "training.multipliers", value, positive=True, why=" (the sign comes from the objective's passes)"
            )
        check_number("training.lr", self.lr, positive=True)
        check_number("training.weight_decay", self.weight_decay, non_negative=True)


@dataclass(frozen=True)
class EvaluationOptions:
    """How validation and test pairs are scored (``model.init_args.evaluation``).

    Args:
        multiplier: ``m`` at which validation and test metrics are logged.
        nll_reduction: ``mean`` (per-token, the authors' code) or ``sum`` (the paper's text) NLL in the
            log-odds metrics and the trade-off sweep.
    """

    multiplier: float = 1.0
    nll_reduction: Reduction = DEFAULT_REDUCTION

    def __post_init__(self) -> None:
        check_number("evaluation.multiplier", self.multiplier)
        check_choice("evaluation.nll_reduction", self.nll_reduction, get_args(Reduction))


@dataclass(frozen=True)
class GenerationOptions:
    """What ``predict`` generates (``model.init_args.generation``; not part of what the control is, so a
    checkpoint does not record it and ``predict --ckpt_path`` takes it from the command line).

    Args:
        multipliers: multipliers to generate with (``None``: 0 and ``evaluation.multiplier``).
        max_new_tokens: generation length.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature.
    """

    multipliers: list[float] | None = None
    max_new_tokens: int = 48
    do_sample: bool = False
    temperature: float = 1.0

    def __post_init__(self) -> None:
        for value in self.multipliers or []:
            check_number("generation.multipliers", value)
        value = self.max_new_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"{_option('generation.max_new_tokens')} is {value!r}; it must be an integer >= 1")
        check_number("generation.temperature", self.temperature, positive=True)


@dataclass(frozen=True)
class BackboneOptions:
    """How the backbone is loaded and read (``model.init_args.backbone_options``; its name is ``backbone``).

    Args:
        dtype: backbone dtype (``float32``, ``bfloat16``, ``float16``, ``auto``); ``trainer.precision``
            ``bf16-true``/``bf16-mixed`` turn ``float32`` into ``bfloat16`` (see
            :func:`~lightning_split.placement.backbone_dtype`). Also the bitsandbytes compute dtype.
        quantization: bitsandbytes backbone: ``None``, ``nf4``, ``nf4-dq`` (double quantization), ``int8``.
            The control is never quantized and stays float32.
        prepare_kbit: run peft's ``prepare_model_for_kbit_training`` on a quantized backbone (norms and
            embeddings upcast to float32, the QLoRA recipe); ``None``: for the forms that ask for it
            (``Intervention.prepare_kbit_by_default``: ``lora``).
        attn_implementation: ``sdpa`` or ``eager``; ``None``: the architecture's default (``sdpa`` where
            transformers supports it, ``eager`` otherwise, e.g. Gemma-2). Flash attention cannot take the
            packed pair mask.
        reuse_lower_layers: compute the frozen blocks below the control once per pair and reuse them across
            epochs (exact; only for architectures where it is, see ``ModelLayout``).
        cache_dir: where converted GGUF backbones are cached.
        blocks_path: layout override for unknown architectures (dotted path to the block list).
        down_proj_path: layout override (dotted path from a block to its down-projection).
    """

    dtype: Dtype = "float32"
    quantization: Quantization | None = None
    prepare_kbit: bool | None = None
    attn_implementation: AttnImplementation | None = None
    reuse_lower_layers: bool = True
    cache_dir: str | None = None
    blocks_path: str | None = None
    down_proj_path: str | None = None

    def __post_init__(self) -> None:
        check_choice("backbone_options.dtype", self.dtype, get_args(Dtype))
        check_choice("backbone_options.quantization", self.quantization, [None, *get_args(Quantization)])
        check_choice(
            "backbone_options.attn_implementation", self.attn_implementation, [None, *get_args(AttnImplementation)]
        )


Options = TypeVar("Options", TrainingOptions, EvaluationOptions, GenerationOptions, BackboneOptions)

OPTION_GROUPS = (TrainingOptions, EvaluationOptions, GenerationOptions, BackboneOptions)
"""The module's option groups (each an argument of :class:`~lightning_split.models.SteeringModule`)."""


def as_options(kind: type[Options], value: Options | Mapping[str, Any] | None, name: str) -> Options:
    """A group's options from an instance, a mapping of its fields (as jsonargparse and checkpoints give them)
    or ``None`` (the defaults).

    Raises:
        OptionError: ``value`` is of another type or names a field the group lacks.
    """
    if isinstance(value, kind):
        return value
    if value is None:
        return kind()
    if isinstance(value, Mapping):
        known = {f.name for f in fields(kind)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise OptionError(
                f"model option {name} (model.init_args.{name}) has no option {unknown[0]!r}; "
                f"{kind.__name__} takes {sorted(known)}"
            )
        return kind(**value)
    raise OptionError(f"model option {name} (model.init_args.{name}) is {value!r}; give a {kind.__name__} or a mapping")


def option_values(options: object) -> dict[str, Any]:
    """A group's options as a plain dict (what checkpoints and saved controls record)."""
    return asdict(options)  # type: ignore[call-overload]


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


def check_steering_options(
    backbone: str,
    objective: Any,
    form: Any,
    layer: int | None,
    layers: Sequence[int] | None,
    positions: str,
    backbone_options: BackboneOptions,
) -> None:
    """Checks the module's top-level options (the groups check themselves when they are built).

    Types (``objective``; ``form``, whose options check their own ranges), ``positions``, and the layers
    against the block count in the backbone's config (skipped with a custom ``blocks_path``).

    Raises:
        OptionError: the first bad option, named.
        BackboneLoadError: the hub cannot be reached or the model is not there.
        FileNotFoundError: the backbone path does not exist.
    """
    if objective is not None and not isinstance(objective, Objective):
        raise OptionError(f"{_option('objective')} is {objective!r}; give an Objective, e.g. SPLIT(gamma=5.0)")
    if not isinstance(form, FormOptions):
        raise OptionError(f"{_option('form')} is {form!r}; give a form's options, e.g. LoRAOptions(rank=4)")
    check_choice("positions", positions, POSITIONS)
    blocks_path = backbone_options.blocks_path
    num_layers = None if blocks_path else backbone_num_layers(backbone, backbone_options.cache_dir)
    check_layers(backbone, layer, layers, num_layers)
