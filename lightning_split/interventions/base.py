"""The intervention contract: every control is a dynamic weight update ``Δh = m·(ΔW h + Δb)``.

An :class:`Intervention` owns the learned update (ΔW, Δb in some parameterisation) for one site of the
network and returns the *unscaled* update ``ΔW x + Δb`` for the input ``x`` of the edited map. The
per-example multiplier ``m`` and the token positions are applied by :mod:`lightning_split.steering`, which
installs interventions as forward hooks inside a context manager.

A form is one :class:`Intervention` subclass with its :class:`FormOptions` dataclass; defining the class adds
it to :data:`FORM_REGISTRY`, which everything that lists or builds forms reads (the module's ``form`` argument,
saved controls, the config generator, the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..errors import OptionError
from ..layout import ModelLayout

Site = Literal["block_output", "down_proj", "block"]
"""Where an intervention edits the network.

- ``block_output``: the residual stream after decoder block ``layer``; ``x`` is that residual.
- ``down_proj``: the MLP down-projection of block ``layer``; ``x`` is its input (``act(gate(x))·up(x)``)
  and the update is added to its output, so ``ΔW`` edits ``W_down`` exactly (also on Gemma, where a
  norm follows the MLP).
- ``block``: the whole decoder block ``layer`` (full fine-tuning); ``x`` is the block input.
"""


@dataclass
class HookCall:
    """What a hook saw when the edited module ran: its inputs, keyword inputs and unmodified output."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


_BOUND_TESTS: dict[str, tuple[str, Any]] = {
    "min": (">=", lambda value, bound: value >= bound),
    "above": (">", lambda value, bound: value > bound),
    "below": ("<", lambda value, bound: value < bound),
}
"""Bounds a :class:`FormOptions` field may declare in its ``metadata``: the sign shown and the test."""


class FormOptions:
    """Base of the options of a control form: each form declares a frozen dataclass deriving from it.

    A module argument typed ``FormOptions`` takes any of them by class path, e.g.
    ``form: {class_path: lightning_split.interventions.LoRAOptions, init_args: {rank: 8}}``; jsonargparse
    checks the options against the dataclass's fields when the config is parsed, so an option the form does
    not have is a parse error. The class itself is not a dataclass, which keeps its subclasses selectable.
    """

    def __post_init__(self) -> None:
        """Checks each option against the bounds its field declares (``metadata`` keys ``min``, ``above``,
        ``below``), so a bad value is refused when the config is parsed, before any model loads."""
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            bounds = {k: v for k, v in f.metadata.items() if k in _BOUND_TESTS}
            if value is not None and not all(_BOUND_TESTS[k][1](value, v) for k, v in bounds.items()):
                need = ", ".join(f"{_BOUND_TESTS[k][0]} {v}" for k, v in bounds.items())
                raise OptionError(
                    f"form option {f.name} (model.init_args.form.init_args.{f.name}) of {type(self).__name__} is "
                    f"{value!r}; it must be {need}"
                )

    def values(self) -> dict[str, Any]:
        """The options as a plain dict (recorded in checkpoints and saved controls)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


FORM_REGISTRY: dict[str, type[Intervention]] = {}
"""Every control form by name; an :class:`Intervention` subclass that sets ``form`` adds itself."""


class Intervention(nn.Module):
    """Base class of every control form.

    A form is one subclass: it sets :attr:`form` (its registry name), :attr:`options` (its options
    dataclass), :attr:`site` and its capabilities, and implements :meth:`build` and :meth:`delta`. Defining
    the class registers it (:data:`FORM_REGISTRY`); the package imports every module of its folder. Parameters
    are kept in float32 and the update is cast to the activation dtype at the point of use, so the same
    control works on bf16 and quantized backbones.

    Attributes:
        form: the name configs, checkpoints and saved controls use.
        options: the form's options dataclass (a :class:`FormOptions`).
        site: where the form edits the network.
        has_direction: the control is one direction ``v`` (:attr:`direction`): it can be projected out
            (:meth:`ablate`, RePS "sub" passes) and fitted in closed form (DiffMean).
        prepare_kbit_by_default: on a quantized backbone, run peft's k-bit preparation unless the module's
            ``prepare_kbit`` says otherwise (the QLoRA recipe).

    Args:
        layer: index of the decoder block the intervention edits.
    """

    form: ClassVar[str] = "base"
    options: ClassVar[type[FormOptions]] = FormOptions
    site: ClassVar[Site] = "block_output"
    has_direction: ClassVar[bool] = False
    prepare_kbit_by_default: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "form" in cls.__dict__:
            _register(cls)

    def __init__(self, layer: int) -> None:
        super().__init__()
        self.layer = int(layer)

    @classmethod
    def build(cls, options: FormOptions, layout: ModelLayout, layer: int) -> Intervention:
        """Builds a fresh intervention at block ``layer`` of the model described by ``layout``."""
        raise NotImplementedError

    def delta(self, x: torch.Tensor, call: HookCall) -> torch.Tensor:
        """Returns the unscaled update ``ΔW x + Δb`` with the shape of the edited output.

        Args:
            x: input of the edited map, already cast to the intervention's float dtype.
            call: the hooked module's inputs and unmodified output (used by input-free or block forms).
        """
        raise NotImplementedError

    @property
    def direction(self) -> nn.Parameter:
        """The control's single direction ``v`` (forms with :attr:`has_direction` only)."""
        raise NotImplementedError(f"the {self.form} form has no direction")

    def ablate(self, h: torch.Tensor) -> torch.Tensor:
        """Removes the positive projection of ``h`` on :attr:`direction`: ``−ReLU(h·v)/‖v‖²·v``.

        The RePS "sub" passes use it (null-it-out); only forms with :attr:`has_direction` support it.
        """
        v = self.direction
        coef = torch.relu(h @ v) / v.pow(2).sum().clamp_min(1e-12)
        return -coef.unsqueeze(-1) * v

    def config(self) -> dict[str, Any]:
        """Returns the plain settings that rebuild this intervention (stored next to saved weights).

        They hold the form's options (the fields of :attr:`options`) and the sizes taken from the backbone.
        """
        return {"form": self.form, "layer": self.layer}

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype the update is computed in (float32 unless the user cast the module)."""
        for p in self.parameters():
            return p.dtype
        return torch.float32


def _register(cls: type[Intervention]) -> None:
    """Adds a form to :data:`FORM_REGISTRY`; a name may not be taken by another class."""
    if not (isinstance(cls.options, type) and issubclass(cls.options, FormOptions) and is_dataclass(cls.options)):
        raise TypeError(f"{cls.__qualname__}.options must be a dataclass deriving from FormOptions")
    if any(other.options is cls.options for other in FORM_REGISTRY.values() if other.form != cls.form):
        raise TypeError(f"{cls.options.__qualname__} already belongs to another form")
    previous = FORM_REGISTRY.get(cls.form)
    if previous is not None and previous.__qualname__ != cls.__qualname__:
        raise TypeError(f"form {cls.form!r} is taken by {previous.__module__}.{previous.__qualname__}")
    FORM_REGISTRY[cls.form] = cls


def form_class(form: str) -> type[Intervention]:
    """The registered intervention class of ``form``."""
    if form not in FORM_REGISTRY:
        raise ValueError(f"unknown control form {form!r}; choose one of {sorted(FORM_REGISTRY)}")
    return FORM_REGISTRY[form]


def form_options(form: str, **values: Any) -> FormOptions:
    """The options of ``form`` (by registry name) with ``values`` set; an option the form lacks is an error."""
    options_class = form_class(form).options
    known = [f.name for f in fields(options_class)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"the {form} form has no option {unknown}; its options are {known}")
    return options_class(**values)


def form_of(options: FormOptions) -> type[Intervention]:
    """The registered intervention class whose options ``options`` are."""
    for cls in FORM_REGISTRY.values():
        if type(options) is cls.options:
            return cls
    names = sorted(f"{cls.options.__qualname__} ({form})" for form, cls in FORM_REGISTRY.items())
    raise ValueError(
        f"form={options!r} is not the options of a registered form; give one of {names}, e.g. "
        "LoRAOptions(rank=4), or in a config form: {class_path: lightning_split.interventions.LoRAOptions}"
    )
