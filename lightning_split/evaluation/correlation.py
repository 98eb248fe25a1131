"""Spearman rank correlations across multipliers between the log-odds curve and the judged scores.

Each log-odds metric (preference, utility: means over the swept pairs per ``m``) is ranked against each judged score
(means over every judged generation of both halves per ``m``) over the multipliers where both have a value. A low or
negative correlation shows where teacher-forced log-odds and free generation disagree (SPEC §8's known limit: the
coherence cliff of utility log-odds and of a judged coherence score can sit at different multipliers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import spearmanr

from .judging import JudgedGeneration

#: Fewest multipliers a correlation is computed on.
MIN_POINTS = 3


@dataclass(frozen=True)
class Correlation:
    """One Spearman correlation across multipliers.

    Attributes:
        logodds: the log-odds metric (``preference`` or ``utility``).
        judged: the judged score (a criterion or ``aggregate``).
        rho: Spearman's rho, ``None`` when undefined (see ``note``).
        n: multipliers used.
        note: why ``rho`` is ``None`` (too few multipliers, a constant series), else ``""``.
    """

    logodds: str
    judged: str
    rho: float | None
    n: int
    note: str = ""


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, str]:
    """Spearman's rho of two equally long series (ties get average ranks), with the reason when undefined."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs series of one length, got {len(x)} and {len(y)}")
    if len(x) < MIN_POINTS:
        return None, f"{len(x)} multipliers (needs {MIN_POINTS})"
    if len(set(x)) == 1 or len(set(y)) == 1:
        return None, "constant across multipliers"
    rho = float(spearmanr(x, y).statistic)
    return (None, "undefined") if math.isnan(rho) else (rho, "")


def judged_means(judged: Sequence[JudgedGeneration], criterion: str) -> dict[float, float]:
    """Mean of ``criterion`` per multiplier over every generation that has it (both halves)."""
    values: dict[float, list[float]] = {}
    for j in judged:
        score = j.scores.get(criterion)
        if score is not None:
            values.setdefault(j.m, []).append(score)
    return {m: sum(v) / len(v) for m, v in values.items()}


def correlations(
    logodds: dict[str, dict[float, float]], judged: Sequence[JudgedGeneration], criteria: Sequence[str]
) -> list[Correlation]:
    """Spearman's rho of each log-odds metric against each judged criterion, over their common multipliers.

    Args:
        logodds: ``{metric: {m: value}}``, e.g. ``{"preference": {...}, "utility": {...}}``.
        judged: the judged generations.
        criteria: the judged scores to correlate (criteria and ``aggregate``).
    """
    found = []
    for criterion in criteria:
        means = judged_means(judged, criterion)
        for metric, curve in logodds.items():
            common = sorted(set(curve) & set(means))
            rho, note = spearman([curve[m] for m in common], [means[m] for m in common])
            found.append(Correlation(metric, criterion, rho, len(common), note))
    return found
