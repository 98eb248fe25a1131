"""The measuring passes: unsteered reference activations, then every measure at every multiplier of a sweep.

Both passes are :func:`lightning_split.sweep.sweep_losses` runs (lower blocks once per batch, several
multipliers per upper pass) with an observer that captures the answer-final residual states
(:func:`~lightning_split.manifold.capture.capture_readouts`) around each pass:

1. :class:`ReferenceBuilder` keeps the ``m = 0`` activations of the training pairs: streamed float64 moments
   and a seeded sample per layer, turned into :class:`~lightning_split.manifold.reference.ManifoldReference`;
2. :class:`SteeredMeasurer` measures every activation of the evaluated pairs at every multiplier against
   them, keeping per-activation scalars (``[M, N]``), the preference-plane coordinates (``[M, N, 2]``) and
   streamed sums of ``Δh = h(m) − h(0)`` (its principal direction and the share of ``‖Δh‖²`` inside the
   principal subspaces), never the activations themselves.

The grid is swept with 0 first, so that each batch's unsteered activations are known before its steered
ones and ``Δh`` is exact per activation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..data.batch import PairBatch
from ..engine import PairScorer
from ..interventions.base import Intervention
from ..layout import ModelLayout
from ..metrics.functional import Reduction
from ..packing import PackedPairs
from ..steering import Positions
from ..sweep import DEFAULT_MAX_ROWS, SweepLosses, sweep_losses
from .capture import capture_readouts, check_layers
from .moments import RunningMoments
from .reference import ManifoldReference, fit_reference
from .reservoir import Reservoir
from .utility_directions import gradient_subspace, utility_gradients

POLARITY_LABELS = torch.tensor([0, 1])
"""Labels of the two readout columns: 0 end of ``A_n``, 1 end of ``A_p``."""


def _flat(captured: torch.Tensor) -> torch.Tensor:
    """``[R, 2, d]`` readouts as ``[2R, d]`` float64 on the CPU (row ``2r + j``: pair row ``r``, polarity ``j``)."""
    return captured.to("cpu", torch.float64).reshape(-1, captured.shape[-1])


class ReferenceBuilder:
    """Sweep observer keeping the unsteered (``m = 0``) readouts of every layer: moments and a seeded sample.

    Args:
        layers: the checked layers.
        layout: the model's layout.
        reference_size: rows kept per layer for the k-NN reference and the Ledoit–Wolf intensity.
        seed: seed of the sample.
    """

    def __init__(self, layout: ModelLayout, layers: Sequence[int], reference_size: int, seed: int) -> None:
        self.layout, self.layers = layout, list(layers)
        self.moments = {layer: RunningMoments(layout.hidden_size) for layer in self.layers}
        self.samples = {layer: Reservoir(reference_size, seed) for layer in self.layers}

    @contextmanager
    def __call__(self, batch: PairBatch, rows: PackedPairs, m: torch.Tensor) -> Iterator[None]:
        """Captures the pass and adds its ``m = 0`` rows."""
        with capture_readouts(self.layout, self.layers, rows) as captured:
            yield
        zero = (m == 0).to(captured[self.layers[0]].device)
        if not bool(zero.any()):
            return
        for layer in self.layers:
            h = _flat(captured[layer][zero])
            self.moments[layer].update(h)
            self.samples[layer].add(h, POLARITY_LABELS.repeat(h.shape[0] // 2))

    def references(self, levels: Sequence[float], k: int) -> dict[int, ManifoldReference]:
        """The fitted reference of every layer."""
        return {
            layer: fit_reference(
                layer, self.moments[layer], self.samples[layer].rows, self.samples[layer].labels, levels, k
            )
            for layer in self.layers
        }


@dataclass
class LayerMeasures:
    """Every measure of one layer over a sweep (multipliers ascending, activations in pair order).

    Attributes:
        reference: what the activations are measured against.
        multipliers: the grid, ascending.
        per_activation: measure name → ``[M, N]`` values (``residual@0.9``, ``residual@0.99``…, ``knn``,
            ``mahalanobis``); ``N`` is twice the number of pairs (end of ``A_n``, end of ``A_p``).
        plane: ``[M, N, 2]`` coordinates on the reference's first two principal directions.
        polarity: ``[N]`` 1 end of ``A_p``, 0 end of ``A_n``.
        pair_index: ``[N]`` the pair (row of its split) of each activation.
        direction: ``[d]`` principal direction ``u`` of ``Δh`` (sign: positive mean projection at the largest m).
        direction_share: share of ``Σ‖Δh‖²`` along ``u`` (1: ``Δh`` is one direction, as for a vector).
        projection: ``[M]`` mean projection ``⟨h(m) − μ, u⟩``.
        delta_norm: ``[M]`` root mean ``‖Δh‖²``.
        subspace_share: subspace name → ``[M]`` share of ``Σ‖Δh‖²`` inside it (NaN at m = 0): ``principal@<level>``
            (the reference's principal subspaces) and, when measured, ``utility@<level>``
            (:mod:`~lightning_split.manifold.utility_directions`).
        subspace_dims: subspace name → its dimension (a random direction has ``dims / d`` of its norm² inside).
    """

    reference: ManifoldReference
    multipliers: list[float]
    per_activation: dict[str, np.ndarray]
    plane: np.ndarray
    polarity: np.ndarray
    pair_index: np.ndarray
    direction: np.ndarray
    direction_share: float
    projection: np.ndarray
    delta_norm: np.ndarray
    subspace_share: dict[str, np.ndarray]
    subspace_dims: dict[str, int]

    @property
    def layer(self) -> int:
        """The block measured."""
        return self.reference.layer

    @property
    def off_manifold(self) -> np.ndarray:
        """``[M, N]`` activations whose normalised k-NN distance passes the reference's off-manifold threshold."""
        return self.per_activation["knn"] > self.reference.off_threshold

    def means(self) -> dict[str, np.ndarray]:
        """Measure name → ``[M]`` mean over activations, with ``projection``."""
        means = {name: values.mean(1) for name, values in self.per_activation.items()}
        return {**means, "projection": self.projection}


class _LayerSums:
    """The per-layer accumulators of :class:`SteeredMeasurer`."""

    def __init__(self, reference: ManifoldReference, subspaces: dict[str, torch.Tensor], n_grid: int) -> None:
        d = reference.mean.numel()
        self.subspaces = subspaces
        self.values: dict[str, list[list[torch.Tensor]]] = {}
        self.plane: list[list[torch.Tensor]] = [[] for _ in range(n_grid)]
        self.sum_h = torch.zeros(n_grid, d, dtype=torch.float64)
        self.count = torch.zeros(n_grid, dtype=torch.float64)
        self.delta_sq = torch.zeros(n_grid, dtype=torch.float64)
        self.inside_sq = {name: torch.zeros(n_grid, dtype=torch.float64) for name in subspaces}
        self.scatter = torch.zeros(d, d, dtype=torch.float64)


class SteeredMeasurer:
    """Sweep observer measuring every readout at every multiplier against the references.

    Args:
        layout: the model's layout.
        references: the reference of each measured layer.
        grid: the multipliers in the order they are swept; the first must be 0.
        subspaces: per layer, further named ``[d, r]`` orthonormal bases whose share of ``‖Δh‖²`` is measured
            (the principal subspaces of the references are always measured).
    """

    def __init__(
        self,
        layout: ModelLayout,
        references: dict[int, ManifoldReference],
        grid: Sequence[float],
        subspaces: dict[int, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        if not grid or grid[0] != 0:
            raise ValueError(f"the measuring sweep must start at m = 0 (to know each h(0) first), got {list(grid)}")
        self.layout, self.references, self.grid = layout, references, [float(m) for m in grid]
        self._swept = torch.tensor(self.grid, dtype=torch.float32).tolist()  # the multipliers as the sweep passes them
        self.sums = {}
        for layer, ref in references.items():
            bases = {f"principal@{level:g}": ref.basis(level) for level in ref.levels}
            bases.update((subspaces or {}).get(layer, {}))
            self.sums[layer] = _LayerSums(ref, bases, len(grid))
        self.pair_index: list[torch.Tensor] = []
        self._unsteered: dict[int, torch.Tensor] = {}
        self._batch: tuple[int, ...] | None = None

    @contextmanager
    def __call__(self, batch: PairBatch, rows: PackedPairs, m: torch.Tensor) -> Iterator[None]:
        """Captures the pass and measures each copy of the batch at its multiplier."""
        with capture_readouts(self.layout, list(self.references), rows) as captured:
            yield
        size = len(batch)
        key = tuple(batch.index.tolist())
        for copy, value in enumerate(m.view(-1, size)[:, 0].tolist()):
            column = self._swept.index(value)
            if column == 0:
                self._batch = key
                self.pair_index.append(batch.index.detach().cpu().repeat_interleave(2))
            elif self._batch != key:
                raise RuntimeError("a batch's steered activations came before its unsteered ones")
            for layer, reference in self.references.items():
                h = _flat(captured[layer][copy * size : (copy + 1) * size])
                if column == 0:
                    self._unsteered[layer] = h
                self._add(self.sums[layer], reference, column, h, h - self._unsteered[layer])

    def _add(self, sums: _LayerSums, ref: ManifoldReference, column: int, h: torch.Tensor, dh: torch.Tensor) -> None:
        measures = {f"residual@{level:g}": ref.residual(h, level) for level in ref.levels}
        measures.update(knn=ref.knn_ratio(h), mahalanobis=ref.mahalanobis(h))
        for name, values in measures.items():
            sums.values.setdefault(name, [[] for _ in self.grid])[column].append(values)
        sums.plane[column].append(ref.plane(h))
        sums.sum_h[column] += h.sum(0)
        sums.count[column] += h.shape[0]
        sums.delta_sq[column] += dh.pow(2).sum()
        for name, basis in sums.subspaces.items():
            sums.inside_sq[name][column] += (dh @ basis).pow(2).sum()
        sums.scatter += dh.T @ dh

    def results(self) -> dict[int, LayerMeasures]:
        """The measures of every layer, multipliers ascending."""
        order = sorted(range(len(self.grid)), key=lambda i: self.grid[i])
        pair_index = torch.cat(self.pair_index).numpy()
        return {layer: self._layer(ref, self.sums[layer], order, pair_index) for layer, ref in self.references.items()}

    def _layer(
        self, ref: ManifoldReference, sums: _LayerSums, order: list[int], pair_index: np.ndarray
    ) -> LayerMeasures:
        eigenvalues, eigenvectors = torch.linalg.eigh(sums.scatter)
        direction = eigenvectors[:, -1]
        mean_h = sums.sum_h / sums.count.unsqueeze(1)
        largest = max(range(len(self.grid)), key=lambda i: self.grid[i])
        if float((mean_h[largest] - mean_h[0]) @ direction) < 0:
            direction = -direction
        total = float(eigenvalues.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = {name: (inside / sums.delta_sq).numpy()[order] for name, inside in sums.inside_sq.items()}
        n_pairs = len(pair_index) // 2
        return LayerMeasures(
            reference=ref,
            multipliers=[self.grid[i] for i in order],
            per_activation={
                name: torch.stack([torch.cat(columns[i]) for i in order]).numpy()
                for name, columns in sums.values.items()
            },
            plane=torch.stack([torch.cat(sums.plane[i]) for i in order]).numpy(),
            polarity=POLARITY_LABELS.repeat(n_pairs).numpy(),
            pair_index=pair_index,
            direction=direction.numpy(),
            direction_share=float(eigenvalues[-1]) / total if total > 0 else 0.0,
            projection=((mean_h - ref.mean) @ direction).numpy()[order],
            delta_norm=(sums.delta_sq / sums.count).sqrt().numpy()[order],
            subspace_share=shares,
            subspace_dims={name: int(basis.shape[1]) for name, basis in sums.subspaces.items()},
        )


@dataclass
class ManifoldSweep:
    """What :func:`measure_manifold` returns.

    Attributes:
        references: the reference of each layer (fitted on the reference pairs at m = 0).
        layers: the measures of each layer on the evaluated pairs.
        reference_losses: the reference pairs' sweep (the whole grid when asked for, else m = 0 only).
        losses: the evaluated pairs' sweep over the grid (grid order: 0 first).
        utility_level: share of ``Σ‖gᵢ‖²`` explained by the utility-relevant subspaces, ``None`` if not measured.
    """

    references: dict[int, ManifoldReference]
    layers: dict[int, LayerMeasures]
    reference_losses: SweepLosses
    losses: SweepLosses
    utility_level: float | None


def measure_manifold(
    scorer: PairScorer,
    control: Sequence[Intervention],
    reference_batches: Sequence[PairBatch],
    batches: Sequence[PairBatch],
    multipliers: Sequence[float],
    layers: Sequence[int],
    positions: Positions = "all",
    reduction: Reduction = "mean",
    levels: Sequence[float] = (0.9, 0.99),
    k: int = 10,
    reference_size: int = 2048,
    seed: int = 0,
    reference_grid: bool = True,
    utility_level: float | None = 0.9,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: bool = False,
) -> ManifoldSweep:
    """Fits the references on ``reference_batches`` at m = 0, then measures ``batches`` over the grid.

    Args:
        scorer: the packed pair engine of the backbone.
        control: the interventions.
        reference_batches: the pairs whose unsteered activations define the manifold (training pairs).
        batches: the pairs measured at every multiplier (the curve's split).
        multipliers: the grid (must contain 0).
        layers: blocks measured (from the control's first layer to the last block).
        positions, reduction: as the control was trained.
        levels: explained-variance levels of the principal subspaces.
        k: neighbours of the k-NN distance.
        reference_size: rows per layer kept for the k-NN reference and the Ledoit–Wolf intensity.
        seed: seed of that sample.
        reference_grid: sweep the reference pairs over the whole grid too (their curve, for curve parameters
            fitted on them), not only at m = 0.
        utility_level: measure the share of ``Δh`` in the utility-relevant subspace explaining this share of the
            reference pairs' utility gradients (:mod:`~lightning_split.manifold.utility_directions`); ``None``:
            skip the gradients.
        max_rows, progress: as in :func:`~lightning_split.sweep.sweep_losses`.
    """
    layers = check_layers(scorer.layout, control, layers)
    if 0 not in multipliers:
        raise ValueError(f"the grid must contain 0, got {list(multipliers)}")
    grid = [0.0, *(float(m) for m in multipliers if m != 0)]
    builder = ReferenceBuilder(scorer.layout, layers, reference_size, seed)
    common = {"positions": positions, "reduction": reduction, "max_rows": max_rows, "progress": progress}
    reference_losses = sweep_losses(
        scorer, control, reference_batches, grid if reference_grid else [0.0], observe=builder, **common
    )
    references = builder.references(levels, k)
    subspaces: dict[int, dict[str, torch.Tensor]] = {}
    if utility_level is not None:
        with _eval_mode(scorer.model):
            gradients = utility_gradients(scorer, reference_batches, layers, reduction)
        for layer, per_pair in gradients.items():
            subspaces[layer] = {f"utility@{utility_level:g}": gradient_subspace(per_pair, utility_level)}
    measurer = SteeredMeasurer(scorer.layout, references, grid, subspaces)
    losses = sweep_losses(scorer, control, batches, grid, observe=measurer, **common)
    return ManifoldSweep(references, measurer.results(), reference_losses, losses, utility_level)


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
