"""Multiplier sweeps: every pair's ``L_p`` and ``L_n`` at every multiplier ``m``, fast and memory-bounded.

:func:`sweep` computes a :class:`~lightning_split.analysis.TradeoffCurve` (with per-pair arrays) for a
control over a grid of multipliers. Per batch of pairs it

1. packs every pair once into ``[prompt | A_p | A_n]`` (the prompt is computed once per multiplier);
2. computes the frozen blocks below the control once (:meth:`~lightning_split.engine.PairScorer.lower_states`)
   and reuses them for every multiplier;
3. runs the upper blocks for ``K`` multipliers in one pass: the packed rows and their lower states are
   stacked ``K`` times with a per-row multiplier vector ``[K·B]`` (``K`` chosen so that ``K·B`` rows stay
   under ``max_rows``, or set by ``chunk_multipliers``);
4. projects to the vocabulary only at the completion-predicting positions.

Everything runs without gradients, on the device of the scorer's model. :func:`plain_sweep` is the plain
loop (a full forward per completion and multiplier, full-vocabulary logits) kept as the reference for
tests and the benchmark. Both return the same numbers.

The metrics per multiplier use the functional formulas of :mod:`lightning_split.metrics.functional` in
float64: mean preference and utility log-odds, pair accuracy, the count of pairs whose utility denominator
was clamped, and the anti-steerable fraction against ``m = 0``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from .analysis.curve import TradeoffCurve
from .data.answers import NO_CLASS
from .data.batch import PairBatch
from .engine import PairLogProbs, PairScorer, plain_pair_logprobs
from .grid import check_grid
from .interventions.base import Intervention
from .metrics.functional import (
    DEFAULT_EPS,
    DEFAULT_REDUCTION,
    Reduction,
    anti_steerable_fraction,
    check_reduction,
    pair_accuracy,
    pair_nll,
    preference_log_odds,
    utility_log_odds,
)
from .packing import PackedPairs
from .progress import ProgressLog
from .steering import Positions

DEFAULT_MAX_ROWS = 64
"""Default bound on packed rows (pairs × multipliers) that go through the upper blocks in one pass."""

LowerFn = Callable[[PairBatch, PackedPairs, int], torch.Tensor]
"""``lower(batch, packed, start) -> [B, S, d]`` input of block ``start`` (e.g. served from a cache)."""

Observer = Callable[[PairBatch, PackedPairs, torch.Tensor], AbstractContextManager[Any]]
"""``observe(batch, rows, m)``: a context entered around each upper-block pass of :func:`sweep_losses`, with the
batch, its packed rows (``K`` stacked copies) and the ``[K·B]`` per-row multipliers (e.g. to hook hidden states)."""


@dataclass
class SweepLosses:
    """Per-pair losses of a sweep, before aggregation.

    Attributes:
        multipliers: the grid, in the order given.
        l_pos: ``[M, N]`` float64 ``L_p`` of every pair at every multiplier.
        l_neg: ``[M, N]`` float64 ``L_n``.
        index: ``[N]`` the pairs' ``PairBatch.index`` (row inside their split).
        reduction: ``"sum"`` or ``"mean"`` NLL behind ``L``.
        answer_class: ``[N]`` the pairs' ``PairBatch.answer_class`` (``-1``: none or unknown).
    """

    multipliers: list[float]
    l_pos: torch.Tensor
    l_neg: torch.Tensor
    index: torch.Tensor
    reduction: Reduction
    answer_class: torch.Tensor

    def select(self, columns: torch.Tensor) -> SweepLosses:
        """The losses of the pairs at ``columns`` (positions along the pair axis)."""
        return SweepLosses(
            self.multipliers,
            self.l_pos[:, columns],
            self.l_neg[:, columns],
            self.index[columns],
            self.reduction,
            self.answer_class[columns],
        )

    @property
    def n_pairs(self) -> int:
        """Number of pairs."""
        return int(self.index.numel())


def default_chunk(batch_size: int, n_multipliers: int, max_rows: int = DEFAULT_MAX_ROWS) -> int:
    """Multipliers per pass so that ``K·B ≤ max_rows`` (at least 1, at most the grid size)."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    return max(1, min(n_multipliers, max_rows // max(batch_size, 1)))


def repeat_packed(packed: PackedPairs, times: int) -> PackedPairs:
    """Stacks ``times`` copies of packed rows (rows ``k·B .. (k+1)·B`` are copy ``k``)."""
    if times == 1:
        return packed
    return PackedPairs(**{f.name: torch.cat([getattr(packed, f.name)] * times) for f in fields(packed)})


def model_device(scorer: PairScorer) -> torch.device:
    """The device of the scorer's model (its first parameter, else the CPU)."""
    param = next(scorer.model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _losses(lp: PairLogProbs, reduction: Reduction) -> tuple[torch.Tensor, torch.Tensor]:
    l_pos = pair_nll(lp.logp_pos.double(), lp.len_pos, reduction)
    l_neg = pair_nll(lp.logp_neg.double(), lp.len_neg, reduction)
    return l_pos.cpu(), l_neg.cpu()


@contextmanager
def _eval_mode(control: Sequence[Intervention] | nn.Module) -> Iterator[None]:
    """Puts the control's modules in eval mode (no LoRA dropout) and restores their modes afterwards."""
    modules = [control] if isinstance(control, nn.Module) else [iv for iv in control if isinstance(iv, nn.Module)]
    saved = [(mod, mod.training) for root in modules for mod in root.modules()]
    try:
        for root in modules:
            root.eval()
        yield
    finally:
        for mod, mode in saved:
            mod.training = mode


def _progress(enabled: bool, total: int | None, description: str) -> Any:
    """A transient ``rich`` progress bar in a terminal, log lines otherwise, or a no-op stand-in."""
    if not enabled:
        return nullcontext(None)
    if not sys.stdout.isatty():
        return ProgressLog(description, total)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return _RichBar(
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
        ),
        total,
        description,
    )


class _RichBar:
    def __init__(self, progress: Any, total: int | None, description: str) -> None:
        self.progress, self.total, self.description = progress, total, description

    def __enter__(self) -> Callable[[int], None]:
        self.progress.__enter__()
        task = self.progress.add_task(self.description, total=self.total)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


def _total(batches: Iterable[PairBatch]) -> int | None:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None


def sweep_losses(
    scorer: PairScorer,
    control: Sequence[Intervention],
    batches: Iterable[PairBatch],
    multipliers: Sequence[float],
    positions: Positions = "all",
    reduction: Reduction = DEFAULT_REDUCTION,
    chunk_multipliers: int | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    lower: LowerFn | None = None,
    observe: Observer | None = None,
) -> SweepLosses:
    """Per-pair ``L_p`` and ``L_n`` at every multiplier, with the fast engine (see the module docstring).

    Args:
        scorer: the packed pair engine of the frozen backbone.
        control: the interventions (an ``nn.ModuleList`` or a list).
        batches: the pairs, any iterable of :class:`PairBatch` (a ``DataLoader`` works).
        multipliers: the grid.
        positions: steered tokens (``all``, ``completion``, ``prompt``), as the control was trained.
        reduction: ``mean`` (per-token NLL) or ``sum`` (sequence NLL).
        chunk_multipliers: multipliers per upper-block pass (``None``: as many as fit in ``max_rows``).
        progress: show a ``rich`` progress bar (one step per batch of pairs).
        device: where to compute (``None``: the device of the scorer's model).
        max_rows: bound on packed rows per pass when ``chunk_multipliers`` is ``None``.
        lower: optional provider of the lower-block states (e.g. a per-pair cache); default computes them
            with :meth:`PairScorer.lower_states`.
        observe: optional :data:`Observer`, entered around every upper-block pass (chunks of one batch come
            in grid order).

    Returns:
        The per-pair losses, in the order of the grid and of the pairs.
    """
    grid = check_grid(multipliers, need_zero=False)
    check_reduction(reduction)
    if chunk_multipliers is not None and chunk_multipliers < 1:
        raise ValueError(f"chunk_multipliers must be >= 1, got {chunk_multipliers}")
    start = scorer.start_layer(control)

    def batch_losses(batch: PairBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        size = len(batch)
        packed = scorer.pack(batch)
        states = None
        if start > 0:
            states = lower(batch, packed, start) if lower is not None else scorer.lower_states(packed, start)
        k = chunk_multipliers or default_chunk(size, len(grid), max_rows)
        l_pos = torch.empty(len(grid), size, dtype=torch.float64)
        l_neg = torch.empty(len(grid), size, dtype=torch.float64)
        for first in range(0, len(grid), k):
            chunk = grid[first : first + k]
            copies = len(chunk)
            m = torch.tensor(chunk, dtype=torch.float32, device=device).repeat_interleave(size)
            rows = repeat_packed(packed, copies)
            rows_lower = states.repeat(copies, 1, 1) if states is not None else None
            with observe(batch, rows, m) if observe is not None else nullcontext():
                lp = scorer.score_packed(rows, control, m, positions, rows_lower)
            lp_pos, lp_neg = _losses(lp, reduction)
            l_pos[first : first + copies] = lp_pos.view(copies, size)
            l_neg[first : first + copies] = lp_neg.view(copies, size)
        return l_pos, l_neg

    return _run(scorer, control, batches, grid, reduction, progress, device, "multiplier sweep", batch_losses)


def plain_sweep_losses(
    scorer: PairScorer,
    control: Sequence[Intervention],
    batches: Iterable[PairBatch],
    multipliers: Sequence[float],
    positions: Positions = "all",
    reduction: Reduction = DEFAULT_REDUCTION,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> SweepLosses:
    """:func:`sweep_losses` the plain way: for each batch and each m, :func:`plain_pair_logprobs`.

    Args:
        scorer: supplies the model, its layout and the pad id (its engine is not used).
        control, batches, multipliers, positions, reduction, progress, device: as in :func:`sweep_losses`.
    """
    grid = check_grid(multipliers, need_zero=False)
    check_reduction(reduction)

    def batch_losses(batch: PairBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        size = len(batch)
        l_pos = torch.empty(len(grid), size, dtype=torch.float64)
        l_neg = torch.empty(len(grid), size, dtype=torch.float64)
        for row, m in enumerate(grid):
            mult = torch.full((size,), m, dtype=torch.float32, device=device)
            lp = plain_pair_logprobs(scorer.model, scorer.layout, batch, control, mult, positions, scorer.pad_id)
            l_pos[row], l_neg[row] = _losses(lp, reduction)
        return l_pos, l_neg

    return _run(scorer, control, batches, grid, reduction, progress, device, "plain sweep", batch_losses)


BatchLosses = Callable[[PairBatch, torch.device], tuple[torch.Tensor, torch.Tensor]]


def _run(
    scorer: PairScorer,
    control: Sequence[Intervention],
    batches: Iterable[PairBatch],
    grid: list[float],
    reduction: Reduction,
    progress: bool,
    device: torch.device | str | None,
    description: str,
    batch_losses: BatchLosses,
) -> SweepLosses:
    """The loop both sweeps share: ``batch_losses`` gives each non-empty batch's ``[n_m, B]`` losses."""
    device = torch.device(device) if device is not None else model_device(scorer)
    pos_parts: list[torch.Tensor] = []
    neg_parts: list[torch.Tensor] = []
    index_parts: list[torch.Tensor] = []
    class_parts: list[torch.Tensor] = []
    with torch.no_grad(), _eval_mode(control), _progress(progress, _total(batches), description) as advance:
        for batch in batches:
            batch = batch.to(device)
            if len(batch) == 0:
                continue
            l_pos, l_neg = batch_losses(batch, device)
            pos_parts.append(l_pos)
            neg_parts.append(l_neg)
            index_parts.append(batch.index.detach().cpu())
            known = batch.answer_class is not None
            class_parts.append(batch.answer_class.cpu() if known else torch.full((len(batch),), NO_CLASS))
            if advance is not None:
                advance(1)
    if not pos_parts:
        raise ValueError("the sweep got no pairs")
    return SweepLosses(
        multipliers=grid,
        l_pos=torch.cat(pos_parts, dim=1),
        l_neg=torch.cat(neg_parts, dim=1),
        index=torch.cat(index_parts),
        reduction=reduction,
        answer_class=torch.cat(class_parts).to(torch.long),
    )


def curve_from_losses(losses: SweepLosses, eps: float = DEFAULT_EPS, **metadata: Any) -> TradeoffCurve:
    """Aggregates per-pair losses into a :class:`TradeoffCurve` with the functional metrics (float64).

    Per multiplier: mean preference and utility log-odds, pair accuracy (share with ``L_p < L_n``), the
    number of clamped utility denominators, and (for ``m ≠ 0``) the anti-steerable fraction against
    ``m = 0``. The per-pair preference, utility and clamp arrays, the pairs' indices and answer classes
    are kept on the curve (which splits accuracy and preference by answer class from them).

    Args:
        losses: the sweep's losses; the grid must contain 0.
        eps: floor of the utility denominator (:data:`~lightning_split.metrics.functional.DEFAULT_EPS`).
        **metadata: :class:`TradeoffCurve` metadata (``split``, ``form``, ``objective``, ``layer``,
            ``model``, ``extra``, ``class_names``, ``sampling``); ``reduction`` comes from ``losses``.
    """
    grid = losses.multipliers
    check_grid(grid)
    prefs, utils, clamped, clamps, accuracy = [], [], [], [], []
    for row in range(len(grid)):
        l_pos, l_neg = losses.l_pos[row], losses.l_neg[row]
        prefs.append(preference_log_odds(l_pos, l_neg))
        util, clamp = utility_log_odds(l_pos, l_neg, eps)
        utils.append(util)
        clamped.append(int(clamp.sum()))
        clamps.append(clamp)
        accuracy.append(float(pair_accuracy(l_pos, l_neg).mean()))
    base = prefs[grid.index(0.0)]
    anti: list[float | None] = [
        None if m == 0 else float(anti_steerable_fraction(pref, base, m)) for m, pref in zip(grid, prefs)
    ]
    pair_pref = torch.stack(prefs).numpy()
    pair_util = torch.stack(utils).numpy()
    return TradeoffCurve(
        multipliers=list(grid),
        preference=[float(np.mean(p)) for p in pair_pref],
        utility=[float(np.mean(u)) for u in pair_util],
        accuracy=accuracy,
        clamped=clamped,
        n_pairs=[losses.n_pairs] * len(grid),
        anti_steerable=anti,
        reduction=losses.reduction,
        pair_preference=pair_pref,
        pair_utility=pair_util,
        pair_clamped=torch.stack(clamps).numpy(),
        pair_index=losses.index.tolist(),
        pair_class=losses.answer_class.tolist(),
        **metadata,
    )


def sweep(
    scorer: PairScorer,
    control: Sequence[Intervention],
    batches: Iterable[PairBatch],
    multipliers: Sequence[float],
    positions: Positions = "all",
    reduction: Reduction = DEFAULT_REDUCTION,
    chunk_multipliers: int | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    lower: LowerFn | None = None,
    eps: float = DEFAULT_EPS,
    **metadata: Any,
) -> TradeoffCurve:
    """Sweeps ``multipliers`` over the pairs of ``batches`` and returns the trade-off curve.

    Args:
        scorer, control, batches, multipliers, positions, reduction, chunk_multipliers, progress, device,
        max_rows, lower: as in :func:`sweep_losses`. The grid must contain 0.
        eps: floor of the utility denominator.
        **metadata: :class:`TradeoffCurve` metadata (``split``, ``form``, ``objective``, ``layer``,
            ``model``, ``extra``).

    Returns:
        The curve (grid sorted ascending) with per-pair ``pair_preference`` / ``pair_utility`` arrays of
        shape ``[n_multipliers, n_pairs]``.

    Example:
        >>> curve = sweep(module.scorer, module.control, datamodule.test_dataloader(),
        ...               [-2, -1, 0, 1, 2], positions=module.positions, reduction="mean")
        >>> curve.preference, curve.utility
    """
    check_grid(multipliers)
    losses = sweep_losses(
        scorer,
        control,
        batches,
        multipliers,
        positions,
        reduction,
        chunk_multipliers,
        progress,
        device,
        max_rows,
        lower,
    )
    return curve_from_losses(losses, eps, **metadata)


def plain_sweep(
    scorer: PairScorer,
    control: Sequence[Intervention],
    batches: Iterable[PairBatch],
    multipliers: Sequence[float],
    positions: Positions = "all",
    reduction: Reduction = DEFAULT_REDUCTION,
    progress: bool = False,
    device: torch.device | str | None = None,
    eps: float = DEFAULT_EPS,
    **metadata: Any,
) -> TradeoffCurve:
    """:func:`sweep` the plain way (reference): a full forward per completion and multiplier, full logits."""
    check_grid(multipliers)
    losses = plain_sweep_losses(scorer, control, batches, multipliers, positions, reduction, progress, device)
    return curve_from_losses(losses, eps, **metadata)


__all__ = [
    "DEFAULT_MAX_ROWS",
    "LowerFn",
    "Observer",
    "SweepLosses",
    "curve_from_losses",
    "default_chunk",
    "plain_sweep",
    "plain_sweep_losses",
    "repeat_packed",
    "sweep",
    "sweep_losses",
]
