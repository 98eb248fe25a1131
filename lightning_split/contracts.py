"""Typed contracts between the steering module, its callbacks and the command line.

A callback that sweeps a control reads what it needs from the module through :class:`SweepTarget` alone:
:meth:`SweepTarget.sweep_spec` (the pieces a multiplier sweep runs on, :class:`SweepSpec`) and
:meth:`SweepTarget.describe` (what the report says the run is, :class:`RunDescription`). A callback that
writes files tells the command line where through :class:`HasOutputs`. All three are
``runtime_checkable`` protocols: a callback checks its module with ``isinstance`` and refuses, with
:func:`require_sweep_target`'s message, one that does not provide them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from .engine import PairScorer
from .interventions.base import Intervention
from .metrics.functional import Reduction
from .steering import Positions
from .sweep import LowerFn


@dataclass(frozen=True)
class SweepSpec:
    """What a multiplier sweep of a module's control runs on.

    Attributes:
        scorer: the packed pair engine of the frozen backbone.
        control: the interventions, as the module applies them.
        positions: the steered tokens the control was trained with.
        reduction: ``mean`` or ``sum`` NLL behind the log-odds metrics.
        training_multipliers: the module's training grid (default sweep grids span it).
        answer_classes: names of the answer classes of the evaluated pairs (empty for free text).
        lower: the provider of lower-block states shared with evaluation steps (``None``: computed anew).
    """

    scorer: PairScorer
    control: Sequence[Intervention]
    positions: Positions
    reduction: Reduction
    training_multipliers: tuple[float, ...]
    answer_classes: tuple[str, ...] = ()
    lower: LowerFn | None = None


@dataclass(frozen=True)
class RunDescription:
    """What a report says the run is.

    Attributes:
        model: the backbone as configured (registered name, hub id or path).
        form: the control form's registry name.
        objective: the objective's registry name.
        layers: the blocks the control edits.
    """

    model: str
    form: str
    objective: str
    layers: tuple[int, ...]


@runtime_checkable
class SweepTarget(Protocol):
    """A LightningModule whose control a sweep callback can evaluate (``SteeringModule`` is one)."""

    def sweep_spec(self) -> SweepSpec:
        """The pieces of the sweep; the backbone must be loaded (after ``configure_model``)."""
        ...

    def describe(self) -> RunDescription:
        """The metadata of the reports made from this module."""
        ...


@runtime_checkable
class HasOutputs(Protocol):
    """A callback that wrote files the command line lists at the end of a run."""

    def outputs(self) -> dict[str, Path]:
        """Label -> path of what the callback wrote in the run (empty when it wrote nothing)."""
        ...


def require_sweep_target(module: object, user: str) -> SweepTarget:
    """``module`` typed as a :class:`SweepTarget`; a ``TypeError`` naming ``user`` and what is missing if not."""
    if not isinstance(module, SweepTarget):
        missing = [name for name in ("sweep_spec", "describe") if not callable(getattr(module, name, None))]
        raise TypeError(
            f"{user} needs a module that satisfies lightning_split.contracts.SweepTarget, but "
            f"{type(module).__name__} has no {' or '.join(f'{name}()' for name in missing)}; use "
            "lightning_split.SteeringModule or add these methods (see docs/extending.md, 'Module and callbacks')"
        )
    return module


__all__ = ["HasOutputs", "RunDescription", "SweepSpec", "SweepTarget", "require_sweep_target"]
