"""The objective contract: a loss over the steered completion log-likelihoods of polarity pairs.

An objective names the passes it needs (``add``: the pair at ``+m``; ``sub``: the pair with completions
swapped at ``-m``, or with the direction projected out) and whether it needs the unsteered model's
log-likelihoods. The LightningModule runs the passes (all of them in one packed forward) and hands the
objective each pass *oriented*: ``win`` is the completion the pass trains towards, ``lose`` the other.

An objective is one file: its :class:`Objective` subclass sets ``name`` and registers itself
(:data:`OBJECTIVE_REGISTRY`); a config picks it by class path (``model.init_args.objective``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..engine import PairLogProbs
from ..interventions.base import Intervention


@dataclass(frozen=True)
class Pass:
    """One way of presenting a pair to the control.

    Attributes:
        name: ``"add"`` (matching is the target, ``+m``) or ``"sub"`` (not matching is the target).
        sign: sign of the multiplier in this pass.
        ablate: the pass projects the control's direction out instead of scaling it (RePS vector form).
    """

    name: str
    sign: float
    ablate: bool = False

    @property
    def swaps(self) -> bool:
        """True when the pass trains towards the not-matching completion."""
        return self.name == "sub"


ADD = Pass("add", 1.0)
SUB = Pass("sub", -1.0)
SUB_ABLATE = Pass("sub", 0.0, ablate=True)


def mean_ce(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-example mean token cross-entropy of one completion (``[B]``)."""
    return -(logp.sum(1) / mask.sum(1).clamp_min(1).to(logp.dtype))


def win_ce(lp: PairLogProbs) -> torch.Tensor:
    """Per-example mean CE of the pass's target completion."""
    return mean_ce(lp.pos, lp.pos_mask)


def lose_ce(lp: PairLogProbs) -> torch.Tensor:
    """Per-example mean CE of the pass's other completion."""
    return mean_ce(lp.neg, lp.neg_mask)


OBJECTIVE_REGISTRY: dict[str, type[Objective]] = {}
"""Every objective by name; an :class:`Objective` subclass that sets ``name`` adds itself."""


class Objective:
    """Base class: subclasses set :attr:`name`, choose the passes and implement :meth:`pass_loss`.

    Each constructor argument is kept as an attribute of the same name (:meth:`init_args` reads them back,
    to record the objective in checkpoints and saved controls).

    Attributes:
        name: the name saved controls, logs and reports use; setting it registers the class.

    Args:
        bidirectional: also train the swapped pair (the "sub" pass).
    """

    name: ClassVar[str] = "objective"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            previous = OBJECTIVE_REGISTRY.get(cls.name)
            if previous is not None and previous.__qualname__ != cls.__qualname__:
                raise TypeError(f"objective {cls.name!r} is taken by {previous.__module__}.{previous.__qualname__}")
            OBJECTIVE_REGISTRY[cls.name] = cls

    def __init__(self, bidirectional: bool = True) -> None:
        self.bidirectional = bool(bidirectional)

    def init_args(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this objective: ``type(self)(**self.init_args())``."""
        names = [p.name for p in inspect.signature(type(self)).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        return {name: getattr(self, name) for name in names}

    @property
    def needs_reference(self) -> bool:
        """Whether the unsteered log-likelihoods are needed (computed once per pair, cached)."""
        return False

    def passes(self, form: type[Intervention]) -> tuple[Pass, ...]:
        """The passes this objective trains with for a control of ``form`` (its capabilities decide)."""
        return (ADD, SUB) if self.bidirectional else (ADD,)

    def pass_loss(self, steered: PairLogProbs, reference: PairLogProbs | None) -> dict[str, torch.Tensor]:
        """Per-example loss terms of one oriented pass; must contain ``"loss"`` (``[B]``)."""
        raise NotImplementedError

    def __call__(
        self, steered: list[PairLogProbs], reference: list[PairLogProbs] | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean loss over passes and examples, and the mean of every term for logging."""
        terms: dict[str, list[torch.Tensor]] = {}
        for k, lp in enumerate(steered):
            ref = reference[k] if reference is not None else None
            for key, value in self.pass_loss(lp, ref).items():
                terms.setdefault(key, []).append(value)
        logs = {key: torch.cat(values).mean() for key, values in terms.items()}
        return logs["loss"], logs
