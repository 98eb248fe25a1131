"""Tests of the piecewise rational-quadratic decay fits (lightning_split.analysis.fit)."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_split.analysis.fit import RQDecay, fit_preference, fit_utility, r2_on


def continuous_decay(m_pos: float, l_pos: float, p_pos: float, m_neg: float, l_neg: float) -> RQDecay:
    """A decay whose p- is solved so that the two branches meet at m = 0."""
    p_neg = p_pos * np.log1p(m_pos**2 / l_pos) / np.log1p(m_neg**2 / l_neg)
    return RQDecay(m_pos, l_pos, p_pos, m_neg, l_neg, float(p_neg))


def preference_model(scale: float) -> tuple[RQDecay, float, float, float]:
    decay = continuous_decay(0.2 * scale, (0.5 * scale) ** 2, 1.5, -0.1 * scale, (0.3 * scale) ** 2)
    return decay, 3.0 / scale, 0.5, -0.2


@pytest.mark.parametrize("scale", [2.0, 20.0])  # LoRA/local-weight and vector multiplier ranges
def test_preference_fit_recovers_the_generating_curve(scale: float) -> None:
    decay, alpha, beta, offset = preference_model(scale)
    m = np.linspace(-scale, scale, 21)
    truth = (alpha * m + beta) * decay(m) + offset
    y = truth + np.random.default_rng(0).normal(0.0, 1e-3, m.size)

    fit = fit_preference(m, y)

    assert fit.kind == "preference" and fit.n_points == 21
    assert fit.r2 > 0.99
    dense = np.linspace(-scale, scale, 401)
    np.testing.assert_allclose(fit.predict(dense), (alpha * dense + beta) * decay(dense) + offset, atol=0.01)
    assert fit.decay.continuity_gap < 1e-6
    assert set(fit.params()) == {
        "alpha",
        "beta",
        "offset",
        "m_pos",
        "l_pos",
        "p_pos",
        "m_neg",
        "l_neg",
        "p_neg",
    }


def test_utility_fit_recovers_the_generating_curve() -> None:
    decay = continuous_decay(0.1, 0.64, 0.8, -0.1, 1.44)
    m = np.linspace(-2.0, 2.0, 21)
    y = 2.0 * decay(m) - 3.0 + np.random.default_rng(1).normal(0.0, 1e-3, m.size)

    fit = fit_utility(m, y)

    assert fit.kind == "utility" and fit.alpha == 0.0
    assert fit.r2 > 0.99
    dense = np.linspace(-2.0, 2.0, 401)
    np.testing.assert_allclose(fit.predict(dense), 2.0 * decay(dense) - 3.0, atol=0.01)
    assert fit.decay.continuity_gap < 1e-6
    assert "alpha" not in fit.params()


def test_a_straight_line_fits_with_no_decay() -> None:
    m = np.linspace(-2.0, 2.0, 21)

    fit = fit_preference(m, 0.7 * m + 0.1)

    assert fit.r2 > 0.999
    np.testing.assert_allclose(fit.decay(m), 1.0, atol=1e-3)
    assert fit.alpha == pytest.approx(0.7, abs=1e-3)


def test_r2_on_scores_a_fit_on_another_split() -> None:
    decay, alpha, beta, offset = preference_model(2.0)
    m = np.linspace(-2.0, 2.0, 21)
    truth = (alpha * m + beta) * decay(m) + offset
    rng = np.random.default_rng(2)
    train = fit_preference(m, truth + rng.normal(0.0, 0.01, m.size))

    same_curve = truth + rng.normal(0.0, 0.01, m.size)
    other_curve = -truth  # a test split that steers the other way: the fit does not transfer

    assert r2_on(train, m, same_curve) > 0.98
    assert r2_on(train, m, other_curve) < 0.0
    assert np.isnan(r2_on(train, m, np.ones_like(m)))


def test_fewer_distinct_multipliers_than_parameters_is_an_error() -> None:
    m = np.linspace(-1.0, 1.0, 8)
    with pytest.raises(ValueError, match="9 parameters.*got 8"):
        fit_preference(m, m, min_points_per_parameter=1)
    with pytest.raises(ValueError, match="8 parameters.*got 4"):
        fit_utility(np.repeat(m[:4], 2), np.zeros(8), min_points_per_parameter=1)
    assert fit_utility(m, -(m**2), min_points_per_parameter=1).n_points == 8


def test_a_ten_point_grid_is_refused_for_the_nine_parameter_fit() -> None:
    """On main a 10-point grid gave R² ≈ 1 with absurd parameters; under 2 points per parameter it is refused."""
    m = np.r_[np.linspace(-2.0, 2.0, 9), 3.0]
    y = np.random.default_rng(0).normal(size=10)  # noise: any fit through it is meaningless
    with pytest.raises(ValueError, match=r"9 parameters and needs at least 18 distinct multipliers .*got 10"):
        fit_preference(m, y)
    with pytest.raises(ValueError, match=r"8 parameters and needs at least 16 .*got 10"):
        fit_utility(m, y)
    grid = np.linspace(-2.0, 2.0, 18)
    assert fit_preference(grid, np.tanh(grid)).n_points == 18


@pytest.mark.parametrize(
    ("m", "y"),
    [(np.arange(10.0), np.arange(9.0)), (np.arange(10.0), np.r_[np.arange(9.0), np.nan])],
)
def test_malformed_inputs_are_errors(m: np.ndarray, y: np.ndarray) -> None:
    with pytest.raises(ValueError):
        fit_preference(m, y)
