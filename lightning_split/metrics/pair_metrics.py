"""torchmetrics metrics over polarity pairs: PrefOdds, UtilOdds, pair accuracy, clamped-pair count.

Every metric takes the same ``update`` input (per-pair summed completion log-likelihoods and token
counts) and turns it into ``L_p``/``L_n`` with the ``reduction`` chosen at construction. States are
float64 sums and counts reduced with ``"sum"``, so a DDP run gives the single-process number up to
float64 summation order. With ``keep_per_pair=True`` the per-pair values are also kept in ``"cat"``
states for distributions and the anti-steerable fraction.

States stay float64 even when the owning LightningModule is cast with ``.to(torch.bfloat16)`` (as
``precision="bf16-true"`` does): see ``PairMetric._apply``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from lightning_split.data.answers import MAX_ANSWER_CLASSES
from lightning_split.metrics.functional import (
    DEFAULT_EPS,
    DEFAULT_REDUCTION,
    Reduction,
    anti_steerable_fraction,
    balanced_mean,
    check_reduction,
    class_means,
    pair_accuracy,
    pair_nll,
    preference_log_odds,
    utility_log_odds,
)

_F64 = torch.float64


def _valid_eps(eps: float) -> float:
    """The floor of the UtilOdds denominator, checked to lie in (0, 1)."""
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    return eps


class PerPairValues(NamedTuple):
    """Per-pair values gathered from every rank.

    Attributes:
        values: ``[N]`` float64 per-pair values, sorted by ``index`` when indices were given.
        index: ``[N]`` int64 pair indices (sorted), or ``None`` when ``update`` got no ``index``.
    """

    values: Tensor
    index: Tensor | None


def _flat(x: Tensor | None) -> Tensor | None:
    """Flattens a per-pair input to ``[B]`` (``None`` passes through)."""
    return None if x is None else x.reshape(-1)


def _pair_losses(
    logp_pos: Tensor, logp_neg: Tensor, len_pos: Tensor | None, len_neg: Tensor | None, reduction: Reduction
) -> tuple[Tensor, Tensor]:
    """The float64 ``L_p`` and ``L_n`` of a batch of pairs (on ``L_p``'s device), the input of every metric."""
    l_pos = pair_nll(_flat(logp_pos), _flat(len_pos), reduction)
    return l_pos, pair_nll(_flat(logp_neg), _flat(len_neg), reduction).to(l_pos.device)


def _cat(state: list[Tensor] | Tensor, dtype: torch.dtype) -> Tensor:
    """Concatenates a list state (or the tensor a sync left behind) into one 1-D tensor of ``dtype``."""
    if isinstance(state, list):
        if not state:
            return torch.zeros(0, dtype=dtype)
        state = dim_zero_cat(state)
    return state.reshape(-1).to(dtype)


class Float64Metric(Metric):
    """A metric whose float64 (and int64) states keep their dtype whatever the owning module is cast to."""

    def _apply(self, fn: Callable[[Tensor], Tensor], exclude_state: Sequence[str] = "") -> torch.nn.Module:
        """Moves states between devices like torchmetrics does, but never changes their dtype.

        ``Module.to(dtype)`` is not guarded by torchmetrics, so a LightningModule cast to bf16 (as
        ``precision="bf16-true"`` does) would otherwise round the float64 sums. Dtype changes are refused
        (``set_dtype`` included): the states stay float64 (pair indices int64).
        """

        def keep_dtype(tensor: Tensor) -> Tensor:
            moved = fn(tensor)
            return moved if moved.dtype == tensor.dtype else tensor.to(moved.device)

        return super()._apply(keep_dtype, exclude_state)


class PairMetric(Float64Metric):
    """Base class: mean over pairs of one per-pair value computed from ``(L_p, L_n)``.

    Subclasses implement :meth:`_pair_values`. All query methods (:meth:`compute`, :meth:`per_pair`,
    :meth:`pair_count`, :meth:`summary`) gather states across ranks, so under DDP every rank must call
    them.

    Args:
        reduction: ``"sum"`` (summed sequence NLL, the paper's text) or ``"mean"`` (per-token mean NLL,
            the authors' code). Stored as ``self.reduction`` so results can state it.
        keep_per_pair: Also keep every per-pair value (and the pair index, when given) in ``"cat"``
            states.
        **kwargs: Passed to :class:`torchmetrics.Metric` (e.g. ``compute_on_cpu``, ``sync_on_compute``).
    """

    is_differentiable: bool = False
    higher_is_better: bool | None = None
    full_state_update: bool = False

    value_sum: Tensor
    pair_total: Tensor

    def __init__(self, reduction: Reduction = DEFAULT_REDUCTION, keep_per_pair: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reduction: Reduction = check_reduction(reduction)
        self.keep_per_pair = keep_per_pair
        self.add_state("value_sum", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        self.add_state("pair_total", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        if keep_per_pair:
            self.add_state("pair_values", [], dist_reduce_fx="cat")
            self.add_state("pair_index", [], dist_reduce_fx="cat")

    def _pair_values(self, l_pos: Tensor, l_neg: Tensor) -> Tensor:
        """Returns the ``[B]`` float64 per-pair values; subclasses may also update extra states."""
        raise NotImplementedError

    def update(
        self,
        logp_pos: Tensor,
        logp_neg: Tensor,
        len_pos: Tensor | None = None,
        len_neg: Tensor | None = None,
        index: Tensor | None = None,
    ) -> None:
        """Adds a batch of pairs.

        Args:
            logp_pos: ``[B]`` summed completion log-likelihood of each matching completion ``A_p``.
            logp_neg: ``[B]`` summed completion log-likelihood of each not-matching completion ``A_n``.
            len_pos: ``[B]`` completion token counts of ``A_p`` (required for ``reduction="mean"``).
            len_neg: ``[B]`` completion token counts of ``A_n`` (required for ``reduction="mean"``).
            index: ``[B]`` pair indices (e.g. ``PairBatch.index``); with ``keep_per_pair`` they are kept
                so that per-pair values from different passes or ranks can be aligned. Give them in every
                update or in none.
        """
        values = self._pair_values(*_pair_losses(logp_pos, logp_neg, len_pos, len_neg, self.reduction))
        self.value_sum += values.sum().to(self.value_sum.device)
        self.pair_total += values.numel()
        if self.keep_per_pair:
            self.pair_values.append(values)
            if index is not None:
                index = index.detach().reshape(-1).to(device=values.device, dtype=torch.int64)
                if index.numel() != values.numel():
                    raise ValueError(f"index has {index.numel()} entries for {values.numel()} pairs")
                self.pair_index.append(index)

    def compute(self) -> Tensor:
        """Returns the float64 mean of the per-pair values over all pairs seen (NaN when none)."""
        return self.value_sum / self.pair_total

    @contextmanager
    def _synced(self) -> Iterator[None]:
        """Gathers states from every rank for the duration of the block (no-op outside DDP)."""
        if self._is_synced:
            yield
            return
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync
        ):
            yield

    def pair_count(self) -> int:
        """Returns the number of pairs seen on all ranks."""
        with self._synced():
            return int(self.pair_total.item())

    def per_pair(self) -> PerPairValues:
        """Returns every per-pair value from every rank, sorted by pair index when indices were given.

        Raises:
            RuntimeError: If the metric was built without ``keep_per_pair`` or indices were given in some
                updates and not others.
        """
        if not self.keep_per_pair:
            raise RuntimeError(f"{type(self).__name__} was built with keep_per_pair=False")
        with self._synced():
            values = _cat(self.pair_values, _F64)
            index = _cat(self.pair_index, torch.int64)
        if index.numel() == 0:
            return PerPairValues(values, None)
        if index.numel() != values.numel():
            raise RuntimeError("index was given in some updates and not in others")
        order = torch.argsort(index, stable=True)
        return PerPairValues(values[order], index[order])

    def summary(self) -> dict[str, float | int | str]:
        """Returns the mean, the pair count and the reduction as plain Python values (for result records)."""
        with self._synced():
            return self._summary_from_states()

    def _summary_from_states(self) -> dict[str, float | int | str]:
        return {
            "value": float((self.value_sum / self.pair_total).item()),
            "pairs": int(self.pair_total.item()),
            "reduction": self.reduction,
        }


class PreferenceLogOdds(PairMetric):
    """Mean over pairs of the preference log-odds ``PrefOdds = L_n - L_p`` (paper Eq. 7).

    ``higher_is_better`` is ``None``: whether a higher preference is better depends on the sign of the
    multiplier being evaluated.
    """

    higher_is_better = None

    def _pair_values(self, l_pos: Tensor, l_neg: Tensor) -> Tensor:
        return preference_log_odds(l_pos, l_neg)

    def anti_steerable_fraction(self, baseline: PreferenceLogOdds | Tensor, m: float) -> Tensor:
        """Share of pairs whose preference moved against the sign of ``m`` relative to ``baseline``.

        Args:
            baseline: The same metric filled at ``m = 0`` over the same pairs (with ``keep_per_pair``), or
                its ``[N]`` per-pair values in this metric's :meth:`per_pair` order.
            m: The multiplier this metric was filled at.

        Returns:
            A float64 scalar tensor (see :func:`~lightning_split.metrics.functional.anti_steerable_fraction`).

        Raises:
            ValueError: If both sides carry pair indices and they differ, or the pair counts differ.
        """
        at_m = self.per_pair()
        if isinstance(baseline, PreferenceLogOdds):
            at_0 = baseline.per_pair()
            if at_m.index is not None and at_0.index is not None and not torch.equal(at_m.index, at_0.index):
                raise ValueError("the pair indices at m and at m=0 differ")
            base_values = at_0.values
        else:
            base_values = baseline
        return anti_steerable_fraction(at_m.values, base_values, m)


class UtilityLogOdds(PairMetric):
    """Mean over pairs of the utility log-odds ``log(mass / (1 - mass))``, ``mass = e^{-L_p} + e^{-L_n}``.

    Computed in float64 in log space (paper Eq. 8, see
    :func:`~lightning_split.metrics.functional.utility_log_odds`). When ``mass >= 1 - eps`` (possible
    with ``reduction="mean"``) the denominator is clamped to ``eps`` and the pair is counted; the count is
    DDP-reduced and returned by :meth:`clamped_count` and :meth:`summary` (or log
    :class:`ClampedPairCount` next to this metric).

    Args:
        reduction: See :class:`PairMetric`.
        eps: Floor of the denominator ``1 - mass``; default :data:`EPS` = 1e-8.
        keep_per_pair: See :class:`PairMetric`; also keeps the per-pair clamp mask.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    EPS: float = DEFAULT_EPS
    higher_is_better = True

    clamped_total: Tensor

    def __init__(
        self,
        reduction: Reduction = DEFAULT_REDUCTION,
        eps: float = DEFAULT_EPS,
        keep_per_pair: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(reduction=reduction, keep_per_pair=keep_per_pair, **kwargs)
        self.eps = _valid_eps(eps)
        self.add_state("clamped_total", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        if keep_per_pair:
            self.add_state("pair_clamped", [], dist_reduce_fx="cat")

    def _pair_values(self, l_pos: Tensor, l_neg: Tensor) -> Tensor:
        values, clamped = utility_log_odds(l_pos, l_neg, self.eps)
        self.clamped_total += clamped.sum().to(self.clamped_total)
        if self.keep_per_pair:
            self.pair_clamped.append(clamped.to(_F64))
        return values

    def clamped_count(self) -> int:
        """Returns the number of pairs (on all ranks) whose denominator was clamped to ``eps``."""
        with self._synced():
            return int(self.clamped_total.item())

    def per_pair_clamped(self) -> Tensor:
        """Returns the ``[N]`` bool clamp mask in the order of :meth:`per_pair`."""
        if not self.keep_per_pair:
            raise RuntimeError("UtilityLogOdds was built with keep_per_pair=False")
        with self._synced():
            clamped = _cat(self.pair_clamped, _F64) > 0.5
            index = _cat(self.pair_index, torch.int64)
        if index.numel() == clamped.numel() and index.numel() > 0:
            clamped = clamped[torch.argsort(index, stable=True)]
        return clamped

    def _summary_from_states(self) -> dict[str, float | int | str]:
        out = super()._summary_from_states()
        out["clamped"] = int(self.clamped_total.item())
        out["eps"] = self.eps
        return out


class PairAccuracy(PairMetric):
    """Share of pairs with ``L_p < L_n`` (the paper's Psychopathy accuracy); ties count as wrong."""

    higher_is_better = True

    def _pair_values(self, l_pos: Tensor, l_neg: Tensor) -> Tensor:
        return pair_accuracy(l_pos, l_neg)


class ClampedPairCount(PairMetric):
    """Number of pairs whose UtilOdds denominator is clamped (``e^{-L_p} + e^{-L_n} >= 1 - eps``).

    The same count as :meth:`UtilityLogOdds.clamped_count`, as a metric of its own so that it can be
    passed to ``LightningModule.log`` next to :class:`UtilityLogOdds`.

    Args:
        reduction: See :class:`PairMetric`.
        eps: Must match the :class:`UtilityLogOdds` it accompanies; default 1e-8.
        keep_per_pair: See :class:`PairMetric` (per-pair values are 1.0 for clamped pairs, else 0.0).
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = False

    def __init__(
        self,
        reduction: Reduction = DEFAULT_REDUCTION,
        eps: float = DEFAULT_EPS,
        keep_per_pair: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(reduction=reduction, keep_per_pair=keep_per_pair, **kwargs)
        self.eps = _valid_eps(eps)

    def _pair_values(self, l_pos: Tensor, l_neg: Tensor) -> Tensor:
        return utility_log_odds(l_pos, l_neg, self.eps)[1].to(_F64)

    def compute(self) -> Tensor:
        """Returns the float64 number of clamped pairs over all pairs seen."""
        return self.value_sum.clone()

    def _summary_from_states(self) -> dict[str, float | int | str]:
        out = super()._summary_from_states()
        out["value"] = float(self.value_sum.item())
        out["eps"] = self.eps
        return out


CLASS_VALUES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "accuracy": pair_accuracy,
    "preference": preference_log_odds,
}
"""The per-pair values an :class:`AnswerClassSplit` can split: pair accuracy and preference log-odds."""


class AnswerClassSplit(Float64Metric):
    """Pair accuracy or preference log-odds per answer class (the matching answer), and their balanced mean.

    A control that learned to say "Yes" scores accuracy 1.0 on the "Yes" pairs and 0.0 on the "No" pairs;
    the pooled accuracy (0.5 on a balanced set) hides that, the split shows it. The balanced mean (for
    accuracy: the balanced accuracy) is the unweighted mean over the classes that have pairs. States are
    float64 per-class sums and counts reduced with ``"sum"``, so a DDP run gives the single-process numbers.
    Pairs of class ``-1`` (free-text answers) are left out.

    Args:
        value: ``"accuracy"`` (share of pairs with ``L_p < L_n``) or ``"preference"`` (``L_n - L_p``).
        reduction: See :class:`PairMetric`.
        n_classes: the most classes (ids ``0 .. n_classes - 1``).
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable: bool = False
    higher_is_better: bool | None = None
    full_state_update: bool = False

    class_sum: Tensor
    class_count: Tensor

    def __init__(
        self, value: str = "accuracy", reduction: Reduction = "sum", n_classes: int = MAX_ANSWER_CLASSES, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if value not in CLASS_VALUES:
            raise ValueError(f"value must be one of {sorted(CLASS_VALUES)}, got {value!r}")
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.value = value
        self.reduction: Reduction = check_reduction(reduction)
        self.n_classes = n_classes
        self.add_state("class_sum", torch.zeros(n_classes, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("class_count", torch.zeros(n_classes, dtype=_F64), dist_reduce_fx="sum")

    def update(
        self,
        logp_pos: Tensor,
        logp_neg: Tensor,
        len_pos: Tensor | None = None,
        len_neg: Tensor | None = None,
        answer_class: Tensor | None = None,
    ) -> None:
        """Adds a batch of pairs; inputs as in :meth:`PairMetric.update`, plus each pair's ``answer_class``."""
        if answer_class is None:
            raise ValueError("AnswerClassSplit needs each pair's answer_class (PairBatch.answer_class)")
        if bool((answer_class >= self.n_classes).any()):
            raise ValueError(f"answer_class ids must be < n_classes = {self.n_classes}")
        l_pos, l_neg = _pair_losses(logp_pos, logp_neg, len_pos, len_neg, self.reduction)
        sums, counts = class_means(CLASS_VALUES[self.value](l_pos, l_neg), answer_class, self.n_classes)
        self.class_sum += sums.to(self.class_sum.device)
        self.class_count += counts.to(self.class_count.device)

    def compute(self) -> Tensor:
        """Returns the ``[n_classes]`` float64 per-class means (NaN for a class without pairs)."""
        return self.class_sum / self.class_count

    def balanced(self) -> Tensor:
        """Returns the float64 mean of the per-class means over the classes with pairs (NaN when none)."""
        return balanced_mean(self.compute())
