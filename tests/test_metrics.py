"""Tests of the polarity-pair metrics against an independent NumPy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_split.metrics import (
    DEFAULT_EPS,
    ClampedPairCount,
    PairAccuracy,
    PreferenceLogOdds,
    UtilityLogOdds,
    anti_steerable_fraction,
    pair_nll,
    preference_log_odds,
    utility_log_odds,
)

# ---------------------------------------------------------------- independent NumPy reference


def np_losses(logp: np.ndarray, length: np.ndarray, reduction: str) -> np.ndarray:
    return -logp if reduction == "sum" else -logp / length


def np_util(l_pos: np.ndarray, l_neg: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    mass = np.exp(-l_pos) + np.exp(-l_neg)
    denominator = 1.0 - mass
    clamped = denominator <= eps
    return np.log(mass) - np.log(np.maximum(denominator, eps)), clamped


def make_pairs(n: int, seed: int, n_clamp: int = 0) -> dict[str, np.ndarray]:
    """Random per-pair log-likelihoods; the first ``n_clamp`` pairs get mean-mode mass > 1."""
    rng = np.random.default_rng(seed)
    len_pos = rng.integers(1, 25, size=n)
    len_neg = rng.integers(1, 25, size=n)
    per_token_pos = rng.uniform(0.05, 2.5, size=n)
    per_token_neg = rng.uniform(0.05, 2.5, size=n)
    # e^{-0.1} + e^{-0.3} = 1.65 > 1: clamped in mean mode.
    per_token_pos[:n_clamp] = rng.uniform(0.01, 0.2, size=n_clamp)
    per_token_neg[:n_clamp] = rng.uniform(0.01, 0.4, size=n_clamp)
    return {
        "logp_pos": -per_token_pos * len_pos,
        "logp_neg": -per_token_neg * len_neg,
        "len_pos": len_pos,
        "len_neg": len_neg,
    }


def as_torch(pairs: dict[str, np.ndarray], rows: slice | np.ndarray = slice(None)) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v[rows]) for k, v in pairs.items()}


def all_metrics(reduction: str, keep_per_pair: bool = False) -> dict[str, torch.nn.Module]:
    return {
        "pref": PreferenceLogOdds(reduction, keep_per_pair=keep_per_pair),
        "util": UtilityLogOdds(reduction, keep_per_pair=keep_per_pair),
        "acc": PairAccuracy(reduction, keep_per_pair=keep_per_pair),
        "clamped": ClampedPairCount(reduction, keep_per_pair=keep_per_pair),
    }


# ---------------------------------------------------------------- formulas and metrics vs NumPy


def test_pair_nll_modes_and_errors() -> None:
    logp = torch.tensor([-3.0, -8.0])
    length = torch.tensor([3, 4])
    assert pair_nll(logp, reduction="sum").tolist() == [3.0, 8.0]
    assert pair_nll(logp, length, "mean").tolist() == [1.0, 2.0]
    assert pair_nll(logp, length, "mean").dtype == torch.float64
    with pytest.raises(ValueError, match="token counts"):
        pair_nll(logp, None, "mean")
    with pytest.raises(ValueError, match="length > 0"):
        pair_nll(logp, torch.tensor([0, 1]), "mean")
    with pytest.raises(ValueError, match="reduction"):
        pair_nll(logp, length, "max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        PreferenceLogOdds("token")  # type: ignore[arg-type]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_metrics_match_numpy(reduction: str) -> None:
    pairs = make_pairs(n=64, seed=1, n_clamp=10)
    l_pos = np_losses(pairs["logp_pos"], pairs["len_pos"], reduction)
    l_neg = np_losses(pairs["logp_neg"], pairs["len_neg"], reduction)
    util, clamped = np_util(l_pos, l_neg, 1e-8)
    if reduction == "mean":
        assert clamped[:10].all()  # the constructed pairs really clamp

    metrics = all_metrics(reduction)
    for metric in metrics.values():
        metric.update(**as_torch(pairs))

    np.testing.assert_allclose(metrics["pref"].compute().item(), np.mean(l_neg - l_pos), rtol=1e-12)
    np.testing.assert_allclose(metrics["util"].compute().item(), np.mean(util), rtol=1e-10)
    assert metrics["acc"].compute().item() == pytest.approx(np.mean(l_pos < l_neg), abs=1e-15)
    assert metrics["util"].clamped_count() == int(clamped.sum())
    assert metrics["clamped"].compute().item() == int(clamped.sum())
    assert metrics["util"].compute().dtype == torch.float64

    summary = metrics["util"].summary()
    assert summary["reduction"] == reduction and metrics["util"].reduction == reduction
    assert summary["pairs"] == 64 and summary["clamped"] == int(clamped.sum())
    assert summary["eps"] == DEFAULT_EPS == 1e-8

    # The stateless functions are the same formulas.
    values, mask = utility_log_odds(torch.as_tensor(l_pos), torch.as_tensor(l_neg))
    np.testing.assert_allclose(values.numpy(), util, rtol=1e-10)
    assert mask.numpy().tolist() == clamped.tolist()
    np.testing.assert_array_equal(
        preference_log_odds(torch.as_tensor(l_pos), torch.as_tensor(l_neg)).numpy(), l_neg - l_pos
    )


def test_clamped_value_is_log_mass_minus_log_eps() -> None:
    l_pos = torch.tensor([0.1, 0.1], dtype=torch.float64)
    l_neg = torch.tensor([0.3, 5.0], dtype=torch.float64)
    values, clamped = utility_log_odds(l_pos, l_neg, eps=1e-8)
    assert clamped.tolist() == [True, False]
    expected = math.log(math.exp(-0.1) + math.exp(-0.3)) - math.log(1e-8)
    assert values[0].item() == pytest.approx(expected, rel=1e-12)
    # A larger eps clamps more pairs: 1 - e^{-0.1} - e^{-5} = 0.0884 <= 0.1.
    assert utility_log_odds(l_pos, l_neg, eps=0.1)[1].tolist() == [True, True]
    assert UtilityLogOdds(eps=0.1).eps == 0.1 and UtilityLogOdds.EPS == 1e-8
    with pytest.raises(ValueError, match="eps"):
        UtilityLogOdds(eps=0.0)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_batched_updates_equal_one_update(reduction: str) -> None:
    pairs = make_pairs(n=50, seed=2, n_clamp=7)
    whole = all_metrics(reduction, keep_per_pair=True)
    batched = all_metrics(reduction, keep_per_pair=True)
    for name in whole:
        whole[name].update(**as_torch(pairs), index=torch.arange(50))
        for lo, hi in [(0, 3), (3, 20), (20, 21), (21, 50)]:
            batched[name].update(**as_torch(pairs, slice(lo, hi)), index=torch.arange(lo, hi))
        assert batched[name].compute().item() == pytest.approx(whole[name].compute().item(), rel=1e-12)
        # Equal up to summation order: a row's token sum is vectorised differently at another padded width.
        torch.testing.assert_close(batched[name].per_pair().values, whole[name].per_pair().values, rtol=1e-12, atol=0)
        assert batched[name].pair_count() == 50
    assert batched["util"].clamped_count() == whole["util"].clamped_count()


def test_forward_gives_batch_value_and_accumulates() -> None:
    pairs = make_pairs(n=20, seed=3)
    metric = PreferenceLogOdds("sum")
    first = metric(**as_torch(pairs, slice(0, 8)))
    metric(**as_torch(pairs, slice(8, 20)))
    l_pos, l_neg = -pairs["logp_pos"], -pairs["logp_neg"]
    assert first.item() == pytest.approx(np.mean(l_neg[:8] - l_pos[:8]), rel=1e-12)
    assert metric.compute().item() == pytest.approx(np.mean(l_neg - l_pos), rel=1e-12)


def test_metric_attributes() -> None:
    for cls in (PreferenceLogOdds, UtilityLogOdds, PairAccuracy, ClampedPairCount):
        assert cls.is_differentiable is False and cls.full_state_update is False
    assert PreferenceLogOdds.higher_is_better is None
    assert UtilityLogOdds.higher_is_better is True and PairAccuracy.higher_is_better is True
    assert ClampedPairCount.higher_is_better is False


def test_pair_accuracy_ties_are_wrong() -> None:
    metric = PairAccuracy("sum")
    metric.update(torch.tensor([-1.0, -2.0, -3.0, -1.0]), torch.tensor([-2.0, -2.0, -1.0, -1.5]))
    assert metric.compute().item() == pytest.approx(0.5)


def test_mean_mode_needs_lengths() -> None:
    with pytest.raises(ValueError, match="token counts"):
        UtilityLogOdds("mean").update(torch.tensor([-1.0]), torch.tensor([-2.0]))


def test_nan_pair_is_visible_and_not_clamped() -> None:
    metric = UtilityLogOdds("sum")
    metric.update(torch.tensor([-1.0, math.nan]), torch.tensor([-2.0, -3.0]))
    assert math.isnan(metric.compute().item()) and metric.clamped_count() == 0


# ---------------------------------------------------------------- float64 / log-space precision


def naive_util_float32(l_pos: float, l_neg: float) -> float:
    """Exponentiate-and-subtract in float32: the form the metrics must not use."""
    e_p = torch.exp(-torch.tensor(l_pos, dtype=torch.float32))
    e_n = torch.exp(-torch.tensor(l_neg, dtype=torch.float32))
    return torch.log((e_p + e_n) / (1.0 - e_p - e_n)).item()


def util_metric(l_pos: float, l_neg: float) -> float:
    metric = UtilityLogOdds("sum")
    metric.update(torch.tensor([-l_pos], dtype=torch.float64), torch.tensor([-l_neg], dtype=torch.float64))
    assert metric.clamped_count() == 0
    return metric.compute().item()


def test_precision_mass_near_one() -> None:
    # L_p = L_n = x = ln 2 + 1e-4: mass = 2 e^{-x} = e^{-1e-4}, 1 - mass ~ 1e-4.
    x = math.log(2.0) + 1e-4
    delta = x - np.log(2.0)  # exact (Sterbenz)
    exact = -delta - np.log(-np.expm1(-delta))
    assert util_metric(x, x) == pytest.approx(exact, rel=1e-12)
    assert abs(naive_util_float32(x, x) - exact) / abs(exact) > 1e-6

    # Tiny L_p, large L_n: mass = e^{-1e-5} + e^{-50}.
    small, big = 1e-5, 50.0
    exact = np.log(np.exp(-small) + np.exp(-big)) - np.log(-np.expm1(-small) - np.exp(-big))
    assert util_metric(small, big) == pytest.approx(exact, rel=1e-12)
    assert abs(naive_util_float32(small, big) - exact) / abs(exact) > 1e-6


@pytest.mark.parametrize("l_pos", [120.0, 1000.0])
def test_precision_tiny_mass(l_pos: float) -> None:
    # mass = e^{-L}(1 + e^{-1}) underflows float32 (L=120) and even float64 (L=1000); 1 - mass = 1.
    exact = -l_pos + np.log1p(np.exp(-1.0))
    assert util_metric(l_pos, l_pos + 1.0) == pytest.approx(exact, rel=1e-12)
    assert naive_util_float32(l_pos, l_pos + 1.0) == -math.inf


# ---------------------------------------------------------------- per-pair states and anti-steerable fraction


def test_per_pair_sorted_by_index_with_clamp_mask() -> None:
    pairs = make_pairs(n=6, seed=4, n_clamp=2)
    metric = UtilityLogOdds("mean", keep_per_pair=True)
    order = np.array([5, 0, 3, 1, 4, 2])
    metric.update(**as_torch(pairs, order), index=torch.as_tensor(order))
    result = metric.per_pair()
    assert result.index.tolist() == list(range(6))
    l_pos = np_losses(pairs["logp_pos"], pairs["len_pos"], "mean")
    l_neg = np_losses(pairs["logp_neg"], pairs["len_neg"], "mean")
    util, clamped = np_util(l_pos, l_neg, 1e-8)
    np.testing.assert_allclose(result.values.numpy(), util, rtol=1e-10)
    assert metric.per_pair_clamped().tolist() == clamped.tolist()


def test_per_pair_needs_keep_per_pair_and_consistent_index() -> None:
    with pytest.raises(RuntimeError, match="keep_per_pair"):
        PreferenceLogOdds("sum").per_pair()
    metric = PreferenceLogOdds("sum", keep_per_pair=True)
    metric.update(torch.tensor([-1.0]), torch.tensor([-2.0]), index=torch.tensor([0]))
    metric.update(torch.tensor([-1.0]), torch.tensor([-2.0]))
    with pytest.raises(RuntimeError, match="some updates"):
        metric.per_pair()
    no_index = PreferenceLogOdds("sum", keep_per_pair=True)
    no_index.update(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0]))
    assert no_index.per_pair().index is None and no_index.per_pair().values.tolist() == [1.0, -1.0]


def test_anti_steerable_fraction_function() -> None:
    at_0 = torch.tensor([0.0, 1.0, 2.0, -1.0])
    at_m = torch.tensor([1.0, 0.5, 2.0, -3.0])  # shifts +1, -0.5, 0, -2
    assert anti_steerable_fraction(at_m, at_0, 2.0).item() == pytest.approx(0.5)
    assert anti_steerable_fraction(at_m, at_0, -0.4).item() == pytest.approx(0.25)
    assert anti_steerable_fraction(at_m, at_0, torch.tensor([1.0, 1.0, -1.0, -1.0])).item() == 0.25
    with pytest.raises(ValueError, match="m = 0"):
        anti_steerable_fraction(at_m, at_0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        anti_steerable_fraction(at_m, at_0[:3], 1.0)
    assert math.isnan(anti_steerable_fraction(torch.zeros(0), torch.zeros(0), 1.0).item())


def test_anti_steerable_fraction_method_aligns_by_index() -> None:
    at_0 = PreferenceLogOdds("sum", keep_per_pair=True)
    at_m = PreferenceLogOdds("sum", keep_per_pair=True)
    # PrefOdds at 0 for pairs 0..3: [1, 1, 1, 1]; at m (fed in another order): [2, 0, 3, 0.5].
    at_0.update(torch.tensor([-1.0] * 4), torch.tensor([-2.0] * 4), index=torch.arange(4))
    at_m.update(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -5.0]), index=torch.tensor([3, 2]))
    at_m.update(torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -2.0]), index=torch.tensor([0, 1]))
    assert at_m.anti_steerable_fraction(at_0, m=1.0).item() == pytest.approx(0.5)
    assert at_m.anti_steerable_fraction(at_0, m=-1.0).item() == pytest.approx(0.5)
    other = PreferenceLogOdds("sum", keep_per_pair=True)
    other.update(torch.tensor([-1.0] * 4), torch.tensor([-2.0] * 4), index=torch.arange(1, 5))
    with pytest.raises(ValueError, match="indices"):
        at_m.anti_steerable_fraction(other, m=1.0)


# ---------------------------------------------------------------- dtype robustness


def test_states_stay_float64_when_module_is_cast_to_bf16() -> None:
    module = torch.nn.ModuleDict(all_metrics("mean", keep_per_pair=True))
    pairs = make_pairs(n=10, seed=5, n_clamp=3)
    module["util"].update(**as_torch(pairs, slice(0, 5)))
    module.to(torch.bfloat16)
    module["util"].update(**as_torch(pairs, slice(5, 10)))
    assert module["util"].value_sum.dtype == torch.float64
    assert all(v.dtype == torch.float64 for v in module["util"].pair_values)
    l_pos = np_losses(pairs["logp_pos"], pairs["len_pos"], "mean")
    l_neg = np_losses(pairs["logp_neg"], pairs["len_neg"], "mean")
    expected = np.mean(np_util(l_pos, l_neg, 1e-8)[0])
    np.testing.assert_allclose(module["util"].compute().item(), expected, rtol=1e-12)
    module["util"].reset()
    assert module["util"].value_sum.dtype == torch.float64


# ---------------------------------------------------------------- one default reduction


def test_every_nll_reduction_default_is_the_one_constant() -> None:
    import inspect

    from lightning_split import SteeringModule
    from lightning_split.analysis import TradeoffCurve
    from lightning_split.metrics import DEFAULT_REDUCTION
    from lightning_split.sweep import plain_sweep, plain_sweep_losses, sweep, sweep_losses

    assert DEFAULT_REDUCTION == "mean"
    defaults = {
        f.__qualname__: inspect.signature(f).parameters["reduction"].default
        for f in (pair_nll, sweep_losses, plain_sweep_losses, sweep, plain_sweep, TradeoffCurve)
    }
    defaults["SteeringModule"] = SteeringModule().evaluation_options.nll_reduction
    assert defaults == dict.fromkeys(defaults, DEFAULT_REDUCTION)
    for cls in (PreferenceLogOdds, UtilityLogOdds, PairAccuracy, ClampedPairCount):
        assert cls().reduction == DEFAULT_REDUCTION, cls
    logp, length = torch.tensor([-6.0]), torch.tensor([3])
    assert pair_nll(logp, length).item() == 2.0  # the per-token mean
