"""The measuring passes on tiny models: they change no loss, read the right activations and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_split.data.batch import PairBatch
from lightning_split.engine import PairScorer
from lightning_split.interventions import build_control, form_options
from lightning_split.layout import discover_layout
from lightning_split.lower_reuse import block_io
from lightning_split.manifold.capture import capture_readouts, check_layers, readout_weights
from lightning_split.manifold.measure import measure_manifold
from lightning_split.manifold.relate import relate, spearman
from lightning_split.manifold.utility_directions import gradient_subspace, utility_gradients
from lightning_split.metrics.functional import utility_log_odds
from lightning_split.sweep import curve_from_losses, sweep_losses
from tests.pair_batches import random_pair_batch
from tests.tiny_models import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = [-2.0, -1.0, 0.0, 1.0, 2.0]


def _batches(count: int, rows: int, seed: int) -> list[PairBatch]:
    out = []
    for k in range(count):
        batch = random_pair_batch(rows=rows, seed=seed + k)
        batch.index = torch.arange(k * rows, (k + 1) * rows)
        out.append(batch)
    return out


def _setup(form: str, layer: int = 1):
    model = make_tiny_model("llama")
    layout = discover_layout(model)
    control = build_control(form_options(form), layout, [layer])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in control.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return layout, control, PairScorer(model, layout)


@pytest.fixture(scope="module")
def vector_run():
    layout, control, scorer = _setup("vector")
    run = measure_manifold(
        scorer, control, _batches(6, 4, 100), _batches(2, 3, 10), GRID, [1, 2, layout.num_layers - 1], k=3
    )
    return layout, control, scorer, run


def test_the_observer_changes_no_loss(vector_run) -> None:
    _, control, scorer, run = vector_run
    plain = sweep_losses(scorer, control, _batches(2, 3, 10), [0.0, -2.0, -1.0, 1.0, 2.0], progress=False)
    assert torch.equal(plain.l_pos, run.losses.l_pos) and torch.equal(plain.l_neg, run.losses.l_neg)
    assert run.reference_losses.l_pos.shape == (5, 24)  # the reference pairs were swept over the grid too


def test_a_vector_moves_its_own_layer_along_its_direction(vector_run) -> None:
    _, control, _, run = vector_run
    v = control[0].vector.detach().double()
    at_layer = run.layers[1]
    assert at_layer.direction_share == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(abs(at_layer.direction @ (v / v.norm()).numpy()), 1.0, atol=1e-6)
    m = np.asarray(at_layer.multipliers)
    np.testing.assert_allclose(at_layer.delta_norm, np.abs(m) * float(v.norm()), rtol=1e-5)
    zero = at_layer.multipliers.index(0.0)
    np.testing.assert_allclose(at_layer.projection - at_layer.projection[zero], m * float(v.norm()), rtol=1e-5)
    knn = at_layer.means()["knn"]
    assert knn[zero] < knn[zero + 1] < knn[zero + 2] and knn[zero] < knn[zero - 1] < knn[zero - 2]
    assert at_layer.per_activation["mahalanobis"].shape == (5, 12)  # 6 pairs × 2 readouts
    assert list(at_layer.polarity[:4]) == [0, 1, 0, 1] and list(at_layer.pair_index[:4]) == [0, 0, 1, 1]
    assert np.isnan(at_layer.subspace_share["principal@0.9"][zero])
    assert set(at_layer.subspace_share) == {"principal@0.9", "principal@0.99", "utility@0.9"}


def test_readouts_are_the_mean_block_output_over_each_completion() -> None:
    layout, _, scorer = _setup("vector")
    packed = scorer.pack(_batches(1, 3, 10)[0])
    with capture_readouts(layout, [1, 3], packed) as captured:
        scorer.hidden(packed, None, 0)
    for layer in (1, 3):
        kwargs = scorer._decoder_kwargs(packed)
        expected = readout_weights(packed) @ block_io(layout, layer, "output", **kwargs)
        torch.testing.assert_close(captured[layer], expected.detach())


def test_utility_gradient_matches_a_finite_difference_of_a_vector_control() -> None:
    layout, control, scorer = _setup("vector", layer=2)
    batches = _batches(1, 4, 20)
    both = utility_gradients(scorer, batches, [2, 3], "mean")
    gradients = both[2]
    torch.testing.assert_close(both[3], utility_gradients(scorer, batches, [3], "mean")[3])  # one pass serves all
    eps = 1e-3
    losses = sweep_losses(scorer, control, batches, [-eps, eps], reduction="mean", progress=False)
    util = [utility_log_odds(losses.l_pos[i], losses.l_neg[i])[0] for i in range(2)]
    v = control[0].vector.detach().double()
    finite = (util[1] - util[0]) / (2 * eps)
    np.testing.assert_allclose((gradients @ v).numpy(), finite.numpy(), rtol=2e-2, atol=1e-4)
    basis = gradient_subspace(gradients, 0.999999)
    assert basis.shape == (layout.hidden_size, 4)  # 4 pairs span at most 4 directions
    torch.testing.assert_close(basis.T @ basis, torch.eye(4, dtype=torch.float64))


def test_layers_are_checked() -> None:
    layout, control, _ = _setup("vector", layer=2)
    with pytest.raises(ValueError, match="choose layers in 2..3"):
        check_layers(layout, control, [1])
    last = build_control(form_options("vector"), layout, [layout.num_layers - 1])
    with pytest.raises(ValueError, match="edits the output of the last block"):
        check_layers(layout, last, [layout.num_layers - 1])
    lora_last = build_control(form_options("lora"), layout, [layout.num_layers - 1])
    assert check_layers(layout, lora_last, [3, 3]) == [3]  # the down-projection is inside the block


def test_relation_of_distance_and_utility(vector_run) -> None:
    _, _, _, run = vector_run
    curve = curve_from_losses(run.losses)
    relations = relate(run.layers[1], curve)
    assert [r.measure for r in relations] == [
        "residual@0.9",
        "residual@0.99",
        "knn",
        "mahalanobis",
        "projection",
    ]
    knn = relations[2]
    assert isinstance(knn.spearman, float) and -1 <= knn.spearman <= 1
    assert "too few points" in knn.r2_distance  # 5 multipliers < 6 for a 3-parameter quadratic
    assert spearman(np.arange(4.0), np.ones(4)) == "the utility drop is constant over the grid: no rank correlation"
    assert spearman(np.arange(4.0), np.arange(4.0) ** 3) == pytest.approx(1.0)
