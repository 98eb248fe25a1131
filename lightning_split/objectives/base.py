"""The objective contract: a loss over the steered completion log-likelihoods of polarity pairs.

An objective names the passes it needs (``add``: the pair at ``+m``; ``sub``: the pair with completions
swapped at ``-m``, or with the direction projected out) and whether it needs the unsteered model's
log-likelihoods. The LightningModule runs the passes (all of them in one packed forward) and hands the
objective each pass *oriented*: ``win`` is the completion the pass trains towards, ``lose`` the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine import PairLogProbs


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


class Objective:
    """Base class: subclasses set the passes and implement :meth:`pass_loss`."""

    name = "objective"

    def __init__(self, bidirectional: bool = True) -> None:
        self.bidirectional = bool(bidirectional)

    @property
    def needs_reference(self) -> bool:
        """Whether the unsteered log-likelihoods are needed (computed once per pair, cached)."""
        return False

    def passes(self, form: str) -> tuple[Pass, ...]:
        """The passes this objective trains with for a control of ``form``."""
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
