"""Distances of activations from the unsteered ones: subspace residual, k-NN distance, Mahalanobis distance.

Each function takes float64 ``[n, d]`` activations and the reference statistics it needs; none keeps an
``[n, n_reference]`` matrix larger than :data:`CHUNK` query rows at a time.
"""

from __future__ import annotations

import torch

CHUNK = 1024
"""Query rows per block of pairwise distances."""


def residual_fraction(h: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``‖(I − B Bᵀ)(h − μ)‖ / ‖h − μ‖``: the share of each centred activation's norm outside the subspace.

    Args:
        h: ``[n, d]`` activations.
        mean: ``[d]`` centre μ.
        basis: ``[d, k]`` orthonormal columns ``B`` spanning the subspace.

    Returns:
        ``[n]`` values in ``[0, 1]`` (0 for an activation at the centre).
    """
    centred = h - mean
    outside = centred - (centred @ basis) @ basis.T
    norm = centred.norm(dim=1)
    return torch.where(norm > 0, outside.norm(dim=1) / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)


def knn_distance(h: torch.Tensor, reference: torch.Tensor, k: int, leave_one_out: bool = False) -> torch.Tensor:
    """The mean Euclidean distance from each row of ``h`` to its ``k`` nearest rows of ``reference``.

    Args:
        h: ``[n, d]`` queries.
        reference: ``[r, d]`` reference rows (their order does not matter).
        k: neighbours averaged.
        leave_one_out: ``h`` is ``reference`` itself; each row's own zero distance is left out.

    Raises:
        ValueError: fewer reference rows than ``k`` (``k + 1`` with ``leave_one_out``).
    """
    needed = k + 1 if leave_one_out else k
    if k < 1 or reference.shape[0] < needed:
        raise ValueError(f"k-NN distance with k={k} needs at least {needed} reference rows, got {reference.shape[0]}")
    out = []
    for first in range(0, h.shape[0], CHUNK):
        block = torch.cdist(h[first : first + CHUNK], reference)
        if leave_one_out:
            rows = torch.arange(block.shape[0])
            block[rows, rows + first] = torch.inf
        out.append(block.topk(k, dim=1, largest=False).values.mean(1))
    return torch.cat(out)


def mahalanobis(
    h: torch.Tensor, mean: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor
) -> torch.Tensor:
    """``sqrt((h − μ)ᵀ Σ⁻¹ (h − μ))`` with ``Σ = V diag(λ) Vᵀ`` given by its eigendecomposition.

    Args:
        h: ``[n, d]`` activations.
        mean: ``[d]`` μ.
        eigenvalues: ``[d]`` positive λ (a shrunk covariance has no zero ones).
        eigenvectors: ``[d, d]`` orthonormal columns V.
    """
    if not bool((eigenvalues > 0).all()):
        raise ValueError("the covariance must be positive definite (shrink it first)")
    whitened = ((h - mean) @ eigenvectors) / eigenvalues.sqrt()
    return whitened.norm(dim=1)
