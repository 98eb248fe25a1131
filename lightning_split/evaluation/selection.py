"""Mean judged scores per multiplier and half, and the choice of the multiplier on the selection half alone.

Means are over the generations that have the score; the others (an unparseable or failed judgment) are counted as
excluded. The chosen multiplier is the one with the highest mean aggregate on the selection half; a multiplier
without any valid judgment on the selection half cannot be chosen. Tie rule (:data:`TIE_RULE`): among equal means
the smallest ``|m|`` (the weakest intervention), then the smaller ``m``. The held-out half never takes part in the
choice; its mean at the chosen multiplier is the reported score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import OptionError
from .judging import AGGREGATE, JudgedGeneration
from .prompts import HALVES, Half

TIE_RULE = "highest mean aggregate on the selection half; ties go to the smallest |m|, then to the smaller m"


NO_VALID = (
    "no multiplier has a valid judgment on the selection half (every judgment was unparseable or failed); "
    "check the judge (model, endpoint, --judge-max-tokens) and its raw replies in judged.jsonl"
)


class NoValidJudgmentsError(OptionError):
    """No multiplier has a valid judgment on the selection half, so none can be chosen."""


@dataclass(frozen=True)
class Cell:
    """The mean of one score at one multiplier on one half.

    Attributes:
        mean: the mean over scored generations (``None`` if none is scored).
        n: generations with the score.
        excluded: generations without it (unparseable or failed judgments).
    """

    mean: float | None
    n: int
    excluded: int


#: ``table[criterion][half][m]``: the :class:`Cell` of each score, half and multiplier.
Table = dict[str, dict[Half, dict[float, Cell]]]


def score_table(judged: Sequence[JudgedGeneration], multipliers: Sequence[float]) -> Table:
    """Mean of every score (each criterion and the aggregate) per half and multiplier."""
    criteria = list(dict.fromkeys(c for j in judged for c in j.scores))
    table: Table = {}
    for criterion in criteria:
        table[criterion] = {}
        for half in HALVES:
            table[criterion][half] = {}
            for m in multipliers:
                values = [j.scores.get(criterion) for j in judged if j.half == half and j.m == m]
                scored = [v for v in values if v is not None]
                mean = sum(scored) / len(scored) if scored else None
                table[criterion][half][float(m)] = Cell(mean, len(scored), len(values) - len(scored))
    return table


@dataclass(frozen=True)
class Choice:
    """The chosen multiplier and its scores.

    Attributes:
        m: the chosen multiplier.
        selection_mean: its mean aggregate on the selection half.
        held_out_mean: its mean aggregate on the held-out half (the reported score; ``None`` if no held-out
            generation at ``m`` was judged validly).
        tied: the multipliers that shared the best selection mean (``[m]`` without a tie).
        unchoosable: multipliers without a valid judgment on the selection half.
        rule: :data:`TIE_RULE`.
    """

    m: float
    selection_mean: float
    held_out_mean: float | None
    tied: list[float]
    unchoosable: list[float]
    rule: str = TIE_RULE


def choose_multiplier(table: Table) -> Choice:
    """The multiplier with the best mean aggregate on the selection half (see :data:`TIE_RULE`).

    Raises:
        NoValidJudgmentsError: no multiplier has a valid judgment on the selection half.
    """
    selection = table[AGGREGATE]["selection"]
    valid = {m: c.mean for m, c in selection.items() if c.mean is not None}
    unchoosable = [m for m, c in selection.items() if c.mean is None]
    if not valid:
        raise NoValidJudgmentsError(NO_VALID)
    best = max(valid.values())
    tied = sorted((m for m, v in valid.items() if v == best), key=lambda m: (abs(m), m))
    m = tied[0]
    return Choice(m, best, table[AGGREGATE]["held-out"][m].mean, tied, unchoosable)
