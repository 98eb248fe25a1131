"""The log-odds curve (preference and utility per multiplier) set beside the judged scores.

Taken from the run folder when a fit wrote one covering every evaluated multiplier (``tradeoff/test/curve.json``,
else the newest ``tradeoff/val-epoch*/curve.json``); otherwise computed with :func:`lightning_split.sweep.sweep` on
the evaluated prompts' test pairs (PowerSeeking; AxBench has no stored negatives to sweep); otherwise absent, with
the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analysis import TradeoffCurve
from ..data.pairs import PolarityPair

METRICS = ("preference", "utility")


@dataclass(frozen=True)
class LogOdds:
    """Log-odds per multiplier, or why there are none.

    Attributes:
        source: where they come from (a ``curve.json`` path, ``"sweep of N test pairs"``, or ``"absent"``).
        values: ``{"preference": {m: value}, "utility": {m: value}}`` (empty when absent).
        note: why they are absent, else ``""``.
    """

    source: str
    values: dict[str, dict[float, float]] = field(default_factory=dict)
    note: str = ""


def _covers(curve: TradeoffCurve, multipliers: Sequence[float]) -> bool:
    return all(any(math.isclose(m, c, abs_tol=1e-9) for c in curve.multipliers) for m in multipliers)


def _values(curve: TradeoffCurve, multipliers: Sequence[float]) -> dict[str, dict[float, float]]:
    at = {float(m): i for i, m in enumerate(curve.multipliers)}
    index = {float(m): next(i for c, i in at.items() if math.isclose(m, c, abs_tol=1e-9)) for m in multipliers}
    return {name: {m: float(getattr(curve, name)[i]) for m, i in index.items()} for name in METRICS}


def run_curve_files(run_folder: Path) -> list[Path]:
    """The run's curve files, most preferred first: the test curve, then validation curves newest first."""
    tradeoff = run_folder / "tradeoff"
    test = [tradeoff / "test" / "curve.json"]
    val = sorted(tradeoff.glob("val-epoch*/curve.json"), reverse=True)
    return [p for p in [*test, *val] if p.is_file()]


def from_run(run_folder: Path, multipliers: Sequence[float]) -> LogOdds | None:
    """The first curve of the run folder that covers every multiplier, or ``None``."""
    for path in run_curve_files(run_folder):
        curve = TradeoffCurve.from_json(path)
        if _covers(curve, multipliers):
            return LogOdds(str(path), _values(curve, multipliers))
    return None


def from_sweep(
    steered: Any, pairs: Sequence[PolarityPair], multipliers: Sequence[float], batch_size: int = 8
) -> LogOdds:
    """Sweeps ``pairs`` under the steered model's control over ``multipliers`` (0 added for the utility baseline).

    The NLL reduction is the control's own (:func:`~lightning_split.artifacts.trained_nll_reduction`).
    """
    from ..artifacts import trained_nll_reduction
    from ..data.datamodule import PairCollator
    from ..data.tokenize import PairTokenizer
    from ..engine import PairScorer
    from ..metrics.functional import DEFAULT_REDUCTION
    from ..sweep import sweep

    encoder = PairTokenizer(steered.tokenizer)
    items = list(enumerate(encoder(p) for p in pairs))
    collate = PairCollator(encoder.pad_id)
    batches = [collate(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    scorer = PairScorer(steered.model, steered.layout, pad_id=encoder.pad_id)
    reduction = trained_nll_reduction(steered.metadata) or DEFAULT_REDUCTION
    grid = sorted({0.0, *(float(m) for m in multipliers)})
    curve = sweep(
        scorer, steered.control, batches, grid, positions=steered.positions, reduction=reduction, progress=False
    )
    return LogOdds(f"sweep of {len(pairs)} test pairs ({reduction} NLL)", _values(curve, multipliers))
