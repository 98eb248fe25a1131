"""The one check of a multiplier grid (imported by the curves, the sweeps and the trade-off callback)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_grid(multipliers: Sequence[float], need_zero: bool = True) -> list[float]:
    """The grid as floats, checked: not empty, no duplicates, finite, and (``need_zero``) containing 0.

    The one grid check of the package: the curves, the sweeps and the trade-off callback all call it. Curves are read
    against the unsteered model, so every grid a curve is made from must contain ``m = 0``.

    Raises:
        ValueError: naming the rule the grid breaks and the grid.
    """
    grid = [float(m) for m in multipliers]
    if not grid:
        raise ValueError("the multiplier grid is empty")
    if len(set(grid)) != len(grid):
        raise ValueError(f"duplicate multipliers in {grid}")
    if not all(math.isfinite(m) for m in grid):
        raise ValueError(f"multipliers must be finite, got {grid}")
    if need_zero and 0.0 not in grid:
        raise ValueError(f"the multiplier grid must contain 0 (the unsteered model): {grid}")
    return grid
