"""A seeded uniform sample of a stream of rows (reservoir sampling), kept with a label per row."""

from __future__ import annotations

import numpy as np
import torch


class Reservoir:
    """Keeps a uniform random sample of at most ``size`` of the rows offered (Vitter's algorithm R).

    The same seed and the same stream give the same sample.

    Args:
        size: most rows kept (at least 1).
        seed: seed of the draw.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"reservoir size must be >= 1, got {size}")
        self.size = size
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._rows: list[torch.Tensor] = []
        self._labels: list[int] = []

    def add(self, rows: torch.Tensor, labels: torch.Tensor) -> None:
        """Offers ``rows`` (``[n, d]``) with one integer label each."""
        rows = rows.detach().to("cpu", torch.float64)
        for row, label in zip(rows, labels.tolist()):
            if self.seen < self.size:
                self._rows.append(row)
                self._labels.append(int(label))
            else:
                slot = int(self._rng.integers(0, self.seen + 1))
                if slot < self.size:
                    self._rows[slot], self._labels[slot] = row, int(label)
            self.seen += 1

    @property
    def rows(self) -> torch.Tensor:
        """``[n_kept, d]`` float64 sample."""
        if not self._rows:
            raise ValueError("the reservoir is empty: no rows were offered")
        return torch.stack(self._rows)

    @property
    def labels(self) -> torch.Tensor:
        """``[n_kept]`` labels of the kept rows."""
        return torch.tensor(self._labels, dtype=torch.long)
