"""Tests of the curve fits with baselines (lightning_split.analysis.baselines)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightning_split.analysis.baselines import (
    MODELS,
    PARAMETER_COUNTS,
    BaselineFit,
    compare_fits,
    comparison_markdown,
    fit_model,
)
from lightning_split.analysis.curve import TradeoffCurve
from lightning_split.analysis.fit import RQDecay

M = np.linspace(-2.0, 2.0, 21)


def _noisy(y: np.ndarray, seed: int = 0, scale: float = 1e-3) -> np.ndarray:
    return y + np.random.default_rng(seed).normal(0.0, scale, y.size)


@pytest.mark.parametrize(
    ("model", "truth", "curve"),
    [
        ("line", {"a": 0.5, "b": -1.5}, lambda m: 0.5 - 1.5 * m),
        ("quadratic", {"a": 1.0, "b": 0.3, "c": -0.8}, lambda m: 1.0 + 0.3 * m - 0.8 * m**2),
        ("logistic", {"a": 4.0, "b": 3.0, "m0": 0.4, "c": -1.0}, lambda m: -1.0 + 4.0 / (1 + np.exp(-3.0 * (m - 0.4)))),
    ],
)
def test_each_baseline_recovers_its_generating_parameters(model: str, truth: dict, curve) -> None:
    fit = fit_model(model, "preference", M, _noisy(curve(M)))
    assert isinstance(fit, BaselineFit)
    assert fit.params == pytest.approx(truth, abs=0.02)
    assert fit.r2 > 0.999 and fit.n_points == 21


def test_rq_baseline_recovers_the_generating_curve() -> None:
    decay = RQDecay(0.0, 0.8, 1.2, 0.0, 0.5, 0.7)  # continuous at 0: both branches are 1 there
    y = _noisy(2.0 * decay(M) - 1.0)
    fit = fit_model("rq", "utility", M, y)
    assert isinstance(fit, BaselineFit) and fit.n_params == 8
    np.testing.assert_allclose(fit.predict(M), 2.0 * decay(M) - 1.0, atol=0.01)


def test_parameter_counts() -> None:
    assert PARAMETER_COUNTS == {
        "rq": {"preference": 9, "utility": 8},
        "line": {"preference": 2, "utility": 2},
        "quadratic": {"preference": 3, "utility": 3},
        "logistic": {"preference": 4, "utility": 4},
    }
    y = _noisy(np.tanh(M) + 0.1 * M**2)
    for model in MODELS:
        for kind in ("preference", "utility"):
            fit = fit_model(model, kind, M, y)
            assert isinstance(fit, BaselineFit)
            assert fit.n_params == PARAMETER_COUNTS[model][kind]
            assert len(fit.params) == fit.n_params


def test_information_criteria_follow_their_formulas_and_prefer_the_true_family() -> None:
    y = _noisy(1.0 + 0.3 * M - 0.8 * M**2, scale=0.05)
    line, quadratic = fit_model("line", "utility", M, y), fit_model("quadratic", "utility", M, y)
    assert isinstance(line, BaselineFit) and isinstance(quadratic, BaselineFit)
    n = 21
    assert quadratic.aic == pytest.approx(n * math.log(quadratic.sse / n) + 2 * 3)
    assert quadratic.bic == pytest.approx(n * math.log(quadratic.sse / n) + 3 * math.log(n))
    assert quadratic.bic < line.bic


def test_degenerate_curves_give_messages() -> None:
    assert "flat curve" in fit_model("line", "utility", M, np.full(21, 2.5))
    few = fit_model("rq", "preference", M[::3], np.sin(M[::3]))
    assert few.startswith("too few points: 9 parameters need 18 distinct multipliers") and "has 7" in few
    assert "non-finite" in fit_model("quadratic", "utility", M, np.where(M > 1, np.nan, M))
    with pytest.raises(ValueError, match="model must be one of"):
        fit_model("cubic", "utility", M, M)


def _curve(split: str, pref: np.ndarray, util: np.ndarray, grid: np.ndarray = M) -> TradeoffCurve:
    n = len(grid)
    return TradeoffCurve(list(grid), list(pref), list(util), [0.5] * n, [0] * n, [4] * n, split=split)


def test_comparison_tables_have_the_papers_three_columns_and_never_nan() -> None:
    train = _curve("train", _noisy(np.tanh(2 * M)), _noisy(-(M**2), seed=1))
    test = _curve("test", _noisy(np.tanh(2 * M), seed=2), np.full(21, -1.0))  # flat utility on test
    rows = compare_fits(train, test)
    assert [(r.kind, r.model) for r in rows] == [(k, m) for k in ("preference", "utility") for m in MODELS]
    pref_rq = rows[0]
    assert isinstance(pref_rq.fitted, BaselineFit) and isinstance(pref_rq.transfer, float)
    assert pref_rq.transfer > 0.95  # the same curve on another split
    util_line = next(r for r in rows if r.kind == "utility" and r.model == "line")
    assert "flat curve" in util_line.test_fit and "flat curve" in util_line.transfer
    text = "\n".join(comparison_markdown(rows, "train", "test"))
    assert "R² (train → test)" in text and "nan" not in text.lower()
    assert "Fits not made:" in text and "utility line (test fit): flat curve" in text


def test_comparison_without_a_test_curve_and_with_too_few_points() -> None:
    grid = np.linspace(-1, 1, 9)
    rows = compare_fits(_curve("validation", np.sin(grid), -(grid**2), grid))
    assert all(r.test_fit is None and r.transfer is None for r in rows)
    rq = rows[0]
    assert isinstance(rq.fitted, str) and "too few points" in rq.fitted
    text = "\n".join(comparison_markdown(rows, "validation", None))
    assert "| rq | 9 | not made (1) | — | — |" in text
