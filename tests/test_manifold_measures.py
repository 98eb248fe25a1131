"""Tests of the manifold statistics (lightning_split.manifold: moments, reference, distances)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_split.manifold.distances import knn_distance, mahalanobis, residual_fraction
from lightning_split.manifold.moments import RunningMoments
from lightning_split.manifold.reference import dims_for, fit_reference, ledoit_wolf_shrinkage
from lightning_split.manifold.reservoir import Reservoir


def _low_rank(n: int = 400, d: int = 12, rank: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points lying exactly in a ``rank``-dimensional affine subspace of R^d, and an orthonormal basis of its
    orthogonal complement."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    inside, outside = q[:, :rank], q[:, rank:]
    scales = torch.tensor([3.0, 2.0, 1.0][:rank], dtype=torch.float64)
    points = (torch.randn(n, rank, generator=g, dtype=torch.float64) * scales) @ inside.T + 5.0
    return points, outside


def _reference(points: torch.Tensor, k: int = 5, levels=(0.9, 0.999999)):
    moments = RunningMoments(points.shape[1])
    for chunk in points.split(37):
        moments.update(chunk)
    labels = torch.arange(points.shape[0]) % 2
    return fit_reference(3, moments, points, labels, levels, k)


def test_streamed_moments_equal_the_batch_moments() -> None:
    x = torch.randn(301, 7, dtype=torch.float64) * torch.arange(1, 8) + 3.0
    moments = RunningMoments(7)
    for chunk in x.split(50):
        moments.update(chunk.float())  # any dtype in, float64 statistics out
    xf = x.float().double()
    np.testing.assert_allclose(moments.mean.numpy(), xf.mean(0).numpy(), atol=1e-10)
    np.testing.assert_allclose(moments.covariance.numpy(), np.cov(xf.numpy().T, bias=True), atol=1e-9)
    assert moments.count == 301 and moments.mean.dtype == torch.float64


def test_residual_is_zero_on_the_subspace_and_grows_along_an_orthogonal_direction() -> None:
    points, outside = _low_rank()
    ref = _reference(points)
    assert ref.levels[0.999999] == 3  # the data has exactly 3 directions of variance
    direction = outside[:, 0]
    residuals = [float(ref.residual(points + m * direction, 0.999999).mean()) for m in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert residuals[0] < 1e-12  # unsteered: exactly in the subspace (to rounding)
    assert all(b > a for a, b in zip(residuals, residuals[1:]))
    assert residuals[-1] > 0.5


def test_residual_fraction_of_a_known_vector() -> None:
    basis = torch.eye(3, dtype=torch.float64)[:, :1]
    h = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    np.testing.assert_allclose(residual_fraction(h, torch.zeros(3, dtype=torch.float64), basis).numpy(), [0.8, 0.0])


def test_knn_distance_does_not_depend_on_the_order_of_the_reference() -> None:
    g = torch.Generator().manual_seed(1)
    reference = torch.randn(200, 6, generator=g, dtype=torch.float64)
    queries = torch.randn(30, 6, generator=g, dtype=torch.float64)
    shuffled = reference[torch.randperm(200, generator=g)]
    np.testing.assert_array_equal(
        knn_distance(queries, reference, 7).numpy(), knn_distance(queries, shuffled, 7).numpy()
    )
    brute = np.sort(np.linalg.norm(queries.numpy()[:, None] - reference.numpy()[None], axis=2), axis=1)[:, :7].mean(1)
    np.testing.assert_allclose(knn_distance(queries, reference, 7).numpy(), brute, rtol=1e-12)


def test_leave_one_out_drops_only_the_point_itself() -> None:
    reference = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    np.testing.assert_allclose(knn_distance(reference, reference, 1, leave_one_out=True).numpy(), [1.0, 1.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="needs at least 5 reference rows"):
        knn_distance(reference, reference, 4, leave_one_out=True)


def _numpy_ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """The textbook Ledoit–Wolf covariance (scikit-learn's ``ledoit_wolf``), written independently."""
    n, d = x.shape
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    mu = np.trace(s) / d
    delta = np.sum((s - mu * np.eye(d)) ** 2) / d
    beta = sum(np.sum((np.outer(row, row) - s) ** 2) for row in xc) / n**2 / d
    shrink = min(beta, delta) / delta
    return (1 - shrink) * s + shrink * mu * np.eye(d)


def test_mahalanobis_matches_a_numpy_reference() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(60, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 8, generator=g, dtype=torch.float64)
    ref = _reference(x, k=3, levels=(0.9,))
    cov = _numpy_ledoit_wolf(x.numpy())
    queries = torch.randn(10, 8, generator=g, dtype=torch.float64) * 3
    diff = queries.numpy() - x.numpy().mean(0)
    expected = np.sqrt(np.einsum("ij,ij->i", diff, np.linalg.solve(cov, diff.T).T))
    np.testing.assert_allclose(ref.mahalanobis(queries).numpy(), expected, rtol=1e-9)
    assert 0 < ref.shrinkage < 1
    assert ledoit_wolf_shrinkage(x) == pytest.approx(ref.shrinkage)


def test_mahalanobis_refuses_a_singular_covariance() -> None:
    with pytest.raises(ValueError, match="positive definite"):
        mahalanobis(torch.zeros(1, 2, dtype=torch.float64), torch.zeros(2), torch.tensor([1.0, 0.0]), torch.eye(2))


def test_dims_for_counts_the_leading_directions() -> None:
    eigenvalues = torch.tensor([6.0, 3.0, 1.0], dtype=torch.float64)
    assert [dims_for(eigenvalues, level) for level in (0.5, 0.6, 0.9, 0.95, 1.0)] == [1, 1, 2, 3, 3]


def test_reference_unit_and_threshold() -> None:
    points, _ = _low_rank(n=300)
    ref = _reference(points)
    ratios = ref.knn_ratio(ref.reference)  # not leave-one-out: each point is its own neighbour, so below 1
    assert float(ratios.median()) < 1.0
    assert ref.off_threshold > 1.0  # the 95th percentile of the leave-one-out ratios (median 1)
    with pytest.raises(ValueError, match="more than k=5"):
        fit_reference(0, RunningMoments(12), points[:5], torch.zeros(5), (0.9,), 5)
    with pytest.raises(ValueError, match=r"levels must lie in \(0, 1\]"):
        fit_reference(0, RunningMoments(12), points, torch.zeros(300), (1.5,), 5)


def test_reservoir_is_seeded_and_uniform_enough() -> None:
    rows = torch.arange(1000, dtype=torch.float64).unsqueeze(1)
    first, second = Reservoir(100, seed=3), Reservoir(100, seed=3)
    for chunk in rows.split(64):
        first.add(chunk, chunk[:, 0].long())
        second.add(chunk, chunk[:, 0].long())
    assert torch.equal(first.rows, second.rows) and first.rows.shape == (100, 1)
    assert torch.equal(first.labels, first.rows[:, 0].long())
    assert 300 < float(first.rows.mean()) < 700  # a uniform sample of 0..999, not the first 100
