"""What "on the manifold" means here: statistics of unsteered activations at one layer.

:func:`fit_reference` turns the streamed moments and the seeded sample of unsteered activations into a
:class:`ManifoldReference`, which measures any activation against them:

- the top principal subspaces that explain given shares of the variance (e.g. 0.9 and 0.99);
- a k-nearest-neighbour reference set (the seeded sample), with the typical leave-one-out k-NN distance of
  the reference itself as the unit of distance;
- a Ledoit–Wolf shrinkage Gaussian: the covariance shrunk towards ``(tr Σ / d)·I`` with the shrinkage
  intensity of Ledoit and Wolf (2004), estimated on the sample, applied to the covariance of every row seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .distances import knn_distance, mahalanobis, residual_fraction
from .moments import RunningMoments

OFF_MANIFOLD_QUANTILE = 0.95
"""An activation is marked off-manifold when its normalised k-NN distance passes this quantile of the
reference's own leave-one-out values."""


def ledoit_wolf_shrinkage(sample: torch.Tensor) -> float:
    """The Ledoit–Wolf shrinkage intensity of ``sample`` (``[n, d]``, centred on its own mean).

    With ``S = XᵀX/n``, ``μ = tr S / d``: ``δ = ‖S − μI‖²_F / d``, ``β = min(δ, (Σₖ‖xₖ‖⁴/n − ‖S‖²_F) / (d·n))``
    and the intensity is ``β/δ`` (0 when ``δ = 0``), the convention of scikit-learn's ``ledoit_wolf``.
    """
    n, d = sample.shape
    x = sample - sample.mean(0)
    s = x.T @ x / n
    mu = torch.trace(s) / d
    delta = ((s - mu * torch.eye(d, dtype=s.dtype)) ** 2).sum() / d
    if float(delta) == 0.0:
        return 0.0
    beta = ((x.pow(2).sum(1) ** 2).sum() / n - (s**2).sum()) / (d * n)
    return float(torch.clamp(beta, max=delta) / delta)


def dims_for(eigenvalues: torch.Tensor, level: float) -> int:
    """The fewest leading principal directions whose eigenvalues explain ``level`` of the variance."""
    total = float(eigenvalues.sum())
    if total == 0.0:
        return 1
    share = torch.cumsum(eigenvalues, 0) / total
    return int(torch.searchsorted(share, torch.tensor([level], dtype=share.dtype) - 1e-12)[0]) + 1


@dataclass
class ManifoldReference:
    """Unsteered activations of one layer, and the distances of any activation from them.

    Attributes:
        layer: the block whose output the activations are.
        mean: ``[d]`` mean of every unsteered activation seen.
        eigenvalues: ``[d]`` eigenvalues of their covariance, descending.
        eigenvectors: ``[d, d]`` matching orthonormal eigenvectors (columns).
        shrinkage: Ledoit–Wolf intensity ``s``: the Gaussian's covariance is ``(1 − s)Σ + s·(tr Σ/d)·I``.
        reference: ``[r, d]`` the seeded sample used as k-NN reference.
        labels: ``[r]`` polarity of each reference row (1: end of ``A_p``, 0: end of ``A_n``).
        k: neighbours of the k-NN distance.
        nn_scale: median leave-one-out k-NN distance within the reference (the unit of :meth:`knn_ratio`).
        off_threshold: :data:`OFF_MANIFOLD_QUANTILE` quantile of the reference's leave-one-out k-NN ratios.
        levels: explained-variance level → number of principal directions.
        n_seen: unsteered activations behind ``mean`` and ``eigenvalues``.
    """

    layer: int
    mean: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    shrinkage: float
    reference: torch.Tensor
    labels: torch.Tensor
    k: int
    nn_scale: float
    off_threshold: float
    levels: dict[float, int]
    n_seen: int

    def basis(self, level: float) -> torch.Tensor:
        """``[d, k]`` the top principal directions explaining ``level`` of the variance."""
        return self.eigenvectors[:, : self.levels[level]]

    def residual(self, h: torch.Tensor, level: float) -> torch.Tensor:
        """Share of each centred activation's norm outside the ``level`` subspace (:func:`residual_fraction`)."""
        return residual_fraction(h, self.mean, self.basis(level))

    def knn_ratio(self, h: torch.Tensor) -> torch.Tensor:
        """Mean distance to the ``k`` nearest reference activations, in units of :attr:`nn_scale`."""
        return knn_distance(h, self.reference, self.k) / self.nn_scale

    def mahalanobis(self, h: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance under the shrunk Gaussian."""
        return mahalanobis(h, self.mean, self.shrunk_eigenvalues, self.eigenvectors)

    @property
    def shrunk_eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of the shrunk covariance (same eigenvectors): ``(1 − s)λ + s·mean(λ)``."""
        return (1 - self.shrinkage) * self.eigenvalues + self.shrinkage * self.eigenvalues.mean()

    def plane(self, h: torch.Tensor) -> torch.Tensor:
        """``[n, 2]`` coordinates on the first two principal directions (the "preference plane")."""
        return (h - self.mean) @ self.eigenvectors[:, :2]


def fit_reference(
    layer: int,
    moments: RunningMoments,
    sample: torch.Tensor,
    labels: torch.Tensor,
    levels: Sequence[float] = (0.9, 0.99),
    k: int = 10,
) -> ManifoldReference:
    """Builds the :class:`ManifoldReference` of one layer.

    Args:
        layer: the block.
        moments: streamed moments of every unsteered activation.
        sample: ``[r, d]`` seeded sample of them (k-NN reference, Ledoit–Wolf intensity).
        labels: ``[r]`` polarity labels of the sample.
        levels: explained-variance levels of the principal subspaces, each in ``(0, 1]``.
        k: neighbours of the k-NN distance.

    Raises:
        ValueError: a level outside ``(0, 1]``, or a sample of at most ``k`` rows.
    """
    bad = [level for level in levels if not 0 < level <= 1]
    if bad:
        raise ValueError(f"explained-variance levels must lie in (0, 1], got {bad}")
    if sample.shape[0] <= k:
        raise ValueError(
            f"layer {layer}: the k-NN reference needs more than k={k} unsteered activations, got "
            f"{sample.shape[0]}; use more training pairs or a smaller k"
        )
    eigenvalues, eigenvectors = torch.linalg.eigh(moments.covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0.0), eigenvectors.flip(1)
    loo = knn_distance(sample, sample, k, leave_one_out=True)
    scale = float(loo.median())
    if scale == 0.0:
        raise ValueError(f"layer {layer}: the unsteered activations coincide (zero k-NN distance)")
    return ManifoldReference(
        layer=layer,
        mean=moments.mean.clone(),
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        shrinkage=ledoit_wolf_shrinkage(sample),
        reference=sample,
        labels=labels,
        k=k,
        nn_scale=scale,
        off_threshold=float(torch.quantile(loo / scale, OFF_MANIFOLD_QUANTILE)),
        levels={float(level): dims_for(eigenvalues, level) for level in levels},
        n_seen=moments.count,
    )
