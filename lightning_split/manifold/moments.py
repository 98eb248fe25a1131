"""Streaming float64 mean and covariance of activations (bounded memory: ``O(d²)`` whatever the count)."""

from __future__ import annotations

import torch


class RunningMoments:
    """Mean and covariance of the rows seen so far, merged batch by batch (Chan et al.'s pairwise update).

    Every statistic is float64, whatever the dtype of the rows.

    Args:
        dim: width ``d`` of the rows.
    """

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self._scatter = torch.zeros(dim, dim, dtype=torch.float64)  # sum of (x - mean)(x - mean)^T

    def update(self, rows: torch.Tensor) -> None:
        """Adds ``rows`` (``[n, d]``) to the statistics."""
        rows = rows.detach().to("cpu", torch.float64).reshape(-1, self.mean.numel())
        n = rows.shape[0]
        if n == 0:
            return
        batch_mean = rows.mean(0)
        centred = rows - batch_mean
        delta = batch_mean - self.mean
        total = self.count + n
        self._scatter += centred.T @ centred + torch.outer(delta, delta) * (self.count * n / total)
        self.mean += delta * (n / total)
        self.count = total

    @property
    def covariance(self) -> torch.Tensor:
        """The maximum-likelihood covariance (divided by the count, as Ledoit–Wolf uses it)."""
        if self.count == 0:
            raise ValueError("no rows were added: the covariance of nothing is undefined")
        return self._scatter / self.count
