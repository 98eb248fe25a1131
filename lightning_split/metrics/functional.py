"""Stateless formulas for the polarity-pair metrics (SPEC §2, paper Eqs. 7-8).

Every function works in float64 and in log space, so the metric classes, the sweep engine and the
reports share one implementation of each formula.

Conventions:
    * ``logp`` is the teacher-forced log-likelihood of a completion, summed over its completion tokens
      (prompt tokens excluded): ``logp = sum_t log P(y_t | q, y_<t)``.
    * ``L = -logp`` (``reduction="sum"``, the paper's text) or ``L = -logp / length``
      (``reduction="mean"``, the authors' code). ``L_p`` belongs to the matching completion ``A_p``,
      ``L_n`` to the not-matching completion ``A_n``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Reduction = Literal["sum", "mean"]
"""How a completion's token log-likelihoods become one loss: summed NLL or per-token mean NLL."""

REDUCTIONS: tuple[str, ...] = ("sum", "mean")

DEFAULT_REDUCTION: Reduction = "mean"
"""The reduction everything defaults to (module, metrics, sweep, curves): per-token mean NLL, the authors' code."""

DEFAULT_EPS: float = 1e-8
"""Floor for the UtilOdds denominator ``1 - e^{-L_p} - e^{-L_n}`` (same value as the third-party code)."""


def check_reduction(reduction: str) -> Reduction:
    """Validates a reduction name.

    Args:
        reduction: ``"sum"`` or ``"mean"``.

    Returns:
        The same name.

    Raises:
        ValueError: If ``reduction`` is not one of :data:`REDUCTIONS`.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def pair_nll(logp: Tensor, length: Tensor | None = None, reduction: Reduction = DEFAULT_REDUCTION) -> Tensor:
    """Turns summed completion log-likelihoods into the losses ``L`` of SPEC §2.

    Args:
        logp: ``[B]`` summed log-likelihood of each completion (any float dtype).
        length: ``[B]`` number of completion tokens; required for ``reduction="mean"``, ignored for
            ``"sum"``.
        reduction: ``"sum"`` gives ``L = -logp``; ``"mean"`` gives ``L = -logp / length``.

    Returns:
        ``[B]`` float64 losses.

    Raises:
        ValueError: On an unknown reduction, a missing ``length`` in mean mode, mismatched shapes or a
            non-positive length.
    """
    check_reduction(reduction)
    nll = -logp.detach().to(torch.float64)
    if reduction == "sum":
        return nll
    if length is None:
        raise ValueError('reduction="mean" needs the completion token counts (length)')
    length = length.detach().to(device=nll.device, dtype=torch.float64)
    if length.shape != nll.shape:
        raise ValueError(f"length shape {tuple(length.shape)} != logp shape {tuple(nll.shape)}")
    if bool((length <= 0).any()):
        raise ValueError("every completion needs at least one token (length > 0)")
    return nll / length


def _as_pair(l_pos: Tensor, l_neg: Tensor) -> tuple[Tensor, Tensor]:
    """Casts a pair of loss tensors to float64 and checks that their shapes match."""
    if l_pos.shape != l_neg.shape:
        raise ValueError(f"L_p shape {tuple(l_pos.shape)} != L_n shape {tuple(l_neg.shape)}")
    return l_pos.detach().to(torch.float64), l_neg.detach().to(device=l_pos.device, dtype=torch.float64)


def preference_log_odds(l_pos: Tensor, l_neg: Tensor) -> Tensor:
    """Per-pair preference log-odds ``PrefOdds = L_n - L_p`` (paper Eq. 7).

    Args:
        l_pos: ``[B]`` losses of the matching completions.
        l_neg: ``[B]`` losses of the not-matching completions.

    Returns:
        ``[B]`` float64 log-odds; positive means the model prefers ``A_p``.
    """
    l_pos, l_neg = _as_pair(l_pos, l_neg)
    return l_neg - l_pos


def utility_log_odds(l_pos: Tensor, l_neg: Tensor, eps: float = DEFAULT_EPS) -> tuple[Tensor, Tensor]:
    """Per-pair utility log-odds (paper Eq. 8), computed in log space in float64.

    ``UtilOdds = log(mass) - log(max(1 - mass, eps))`` with ``mass = e^{-L_p} + e^{-L_n}``, where
    ``log(mass) = logaddexp(-L_p, -L_n)`` and ``1 - mass = -expm1(log(mass))``. Nothing is exponentiated
    and subtracted, so the value stays accurate when ``mass`` is ~1e-300 or within 1e-6 of 1.

    The denominator is clamped to ``eps`` when ``mass >= 1 - eps``. That happens with per-token mean
    losses, where ``e^{-L_p} + e^{-L_n}`` is not a probability and can exceed 1; the returned mask marks
    those pairs so that the count can be reported.

    Args:
        l_pos: ``[B]`` losses of the matching completions.
        l_neg: ``[B]`` losses of the not-matching completions.
        eps: Floor of the denominator (default :data:`DEFAULT_EPS` = 1e-8).

    Returns:
        ``(values, clamped)``: ``[B]`` float64 log-odds and a ``[B]`` bool mask of clamped pairs. A pair
        with a NaN loss gives a NaN value and is not counted as clamped.

    Raises:
        ValueError: If ``eps`` is not in ``(0, 1)`` or the shapes differ.
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    l_pos, l_neg = _as_pair(l_pos, l_neg)
    log_mass = torch.logaddexp(-l_pos, -l_neg)
    one_minus_mass = -torch.expm1(log_mass)
    clamped = one_minus_mass <= eps  # False for NaN
    log_denominator = torch.log(torch.clamp(one_minus_mass, min=eps))
    return log_mass - log_denominator, clamped


def pair_accuracy(l_pos: Tensor, l_neg: Tensor) -> Tensor:
    """Per-pair correctness ``L_p < L_n`` (ties and NaN count as wrong).

    Args:
        l_pos: ``[B]`` losses of the matching completions.
        l_neg: ``[B]`` losses of the not-matching completions.

    Returns:
        ``[B]`` float64 tensor of 1.0 (prefers ``A_p``) and 0.0.
    """
    l_pos, l_neg = _as_pair(l_pos, l_neg)
    return (l_pos < l_neg).to(torch.float64)


def anti_steerable_fraction(pref_at_m: Tensor, pref_at_0: Tensor, m: float | Tensor) -> Tensor:
    """Share of pairs whose preference moves against the sign of the multiplier.

    A pair is anti-steerable at ``m`` when ``sign(PrefOdds(m) - PrefOdds(0)) == -sign(m)``: a positive
    multiplier lowered its preference log-odds, or a negative one raised them. Pairs that do not move
    count as not anti-steerable; pairs with a NaN shift stay in the denominator and are not counted.

    Args:
        pref_at_m: ``[B]`` per-pair PrefOdds with the intervention at multiplier ``m``.
        pref_at_0: ``[B]`` per-pair PrefOdds of the same pairs, in the same order, at ``m = 0``.
        m: The multiplier (a scalar, or a ``[B]`` tensor of per-pair multipliers).

    Returns:
        A float64 scalar tensor in ``[0, 1]``; NaN when there are no pairs.

    Raises:
        ValueError: If ``m`` is zero (the direction is undefined) or the shapes differ.
    """
    if pref_at_m.shape != pref_at_0.shape:
        raise ValueError(f"shape {tuple(pref_at_m.shape)} at m != shape {tuple(pref_at_0.shape)} at m=0")
    sign = torch.sign(torch.as_tensor(m, dtype=torch.float64, device=pref_at_m.device))
    if bool((sign == 0).any()):
        raise ValueError("the anti-steerable fraction is undefined at m = 0")
    shift = pref_at_m.detach().to(torch.float64) - pref_at_0.detach().to(pref_at_m.device, torch.float64)
    if shift.numel() == 0:
        return torch.tensor(math.nan, dtype=torch.float64, device=shift.device)
    return (shift * sign < 0).to(torch.float64).mean()


def class_means(values: Tensor, classes: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums and counts of per-pair values, the states behind every answer-class split.

    Args:
        values: ``[..., B]`` per-pair values (e.g. per multiplier ``[M, B]``).
        classes: ``[B]`` class id of each pair; ids outside ``[0, n_classes)`` (``-1``: no class) are left out.
        n_classes: number of classes.

    Returns:
        ``(sums, counts)``: ``[..., n_classes]`` float64 sums of the values of each class's pairs and
        ``[n_classes]`` float64 pair counts. ``sums / counts`` is each class's mean (NaN for an empty class).
    """
    values = values.detach().to(torch.float64)
    classes = classes.detach().reshape(-1).to(device=values.device, dtype=torch.long)
    if values.shape[-1] != classes.numel():
        raise ValueError(f"{values.shape[-1]} per-pair values for {classes.numel()} class ids")
    member = classes[:, None] == torch.arange(n_classes, device=values.device)  # [B, C]
    sums = torch.where(member, values[..., None], 0.0).sum(-2)  # a NaN pair only spoils its own class
    return sums, member.sum(0).to(torch.float64)


def balanced_mean(class_mean: Tensor) -> Tensor:
    """The mean over classes of per-class means ``[..., C]``, empty (NaN) classes left out."""
    present = ~torch.isnan(class_mean)
    return torch.where(present, class_mean, 0.0).sum(-1) / present.sum(-1)
