"""Tests of multiplier selection, the written report and the plots (lightning_split.analysis.report)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lightning_split.analysis.curve import COLUMNS, TradeoffCurve
from lightning_split.analysis.report import best_multiplier, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def hand_curve(preference: list[float] | None = None) -> TradeoffCurve:
    """Utility drops from m = 0 by 0.2, 0.5, 1.5, 3.0 at m = 1, 2, 3, 4."""
    n = 7
    return TradeoffCurve(
        multipliers=[-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0],
        preference=preference or [-3.0, -1.5, 0.0, 1.0, 2.0, 2.5, 2.6],
        utility=[-3.0, -2.0, -1.0, -1.2, -1.5, -2.5, -4.0],
        accuracy=[0.5] * n,
        clamped=[0] * n,
        n_pairs=[8] * n,
    )


@pytest.mark.parametrize(("budget", "expected"), [(0.6, 2.0), (1.5, 3.0), (10.0, 4.0)])
def test_best_multiplier_respects_the_utility_budget(budget: float, expected: float) -> None:
    selection = best_multiplier(hand_curve(), max_utility_drop=budget)

    assert selection.multiplier == expected
    assert selection.utility_drop <= budget
    assert selection.baseline_utility == -1.0 and selection.baseline_preference == 0.0
    assert f"m = {expected:g} gives the highest" in selection.sentence


def test_no_positive_multiplier_within_budget_selects_zero() -> None:
    selection = best_multiplier(hand_curve(), max_utility_drop=0.1)

    assert selection.multiplier == 0.0 and selection.utility_drop == 0.0 and selection.within_budget == ()
    assert "No positive multiplier keeps" in selection.sentence
    assert "smallest drop, 0.200, is at m = 1" in selection.sentence


def test_zero_wins_when_steering_lowers_preference() -> None:
    selection = best_multiplier(hand_curve([3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.0]), max_utility_drop=1.0)

    assert selection.multiplier == 0.0 and selection.within_budget == (1.0, 2.0)
    assert "None of the 2 positive multipliers" in selection.sentence


def test_both_signs_can_select_a_negative_multiplier() -> None:
    curve = hand_curve([3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.0])

    selection = best_multiplier(curve, max_utility_drop=1.0, signs="both")

    assert selection.multiplier == -1.0 and selection.within_budget == (-1.0, 1.0, 2.0)
    assert "non-zero multipliers" in selection.sentence


@pytest.mark.parametrize(("budget", "signs"), [(-0.1, "positive"), (float("nan"), "positive"), (1.0, "up")])
def test_invalid_selection_arguments(budget: float, signs: str) -> None:
    with pytest.raises(ValueError):
        best_multiplier(hand_curve(), max_utility_drop=budget, signs=signs)  # type: ignore[arg-type]


def sweep_curve() -> TradeoffCurve:
    """A 21-point sweep shaped like the paper's curves, with per-pair arrays."""
    m = np.linspace(-2.0, 2.0, 21)
    rng = np.random.default_rng(0)
    preference = 3.0 * np.tanh(m)[:, None] + rng.normal(0.0, 0.3, (21, 16))
    utility = (-1.0 - 1.5 * m**2 / (1 + m**2))[:, None] + rng.normal(0.0, 0.1, (21, 16))
    return TradeoffCurve.from_pairs(
        m.tolist(),
        preference,
        utility,
        [0] * 20 + [2],
        split="test",
        form="vector",
        model="smollm2",
        layer=15,
    )


def test_write_report_writes_every_file(tmp_path: Path) -> None:
    curve = sweep_curve()

    paths = write_report(curve, tmp_path / "out", max_utility_drop=0.5)

    assert set(paths) == {
        "curve_json",
        "curve_csv",
        "report_md",
        "preference_png",
        "utility_png",
        "tradeoff_png",
    }
    assert all(path.parent == tmp_path / "out" and path.is_file() for path in paths.values())
    with paths["curve_csv"].open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == COLUMNS
    for written, expected in zip(rows[1:], curve.rows(), strict=True):
        assert [float(cell) if cell else None for cell in written] == list(expected.values())
    loaded = TradeoffCurve.from_json(paths["curve_json"])
    assert loaded.rows() == curve.rows() and loaded.metadata() == curve.metadata()
    np.testing.assert_array_equal(loaded.pair_preference, curve.pair_preference)
    np.testing.assert_array_equal(loaded.pair_utility, curve.pair_utility)
    for key in ("preference_png", "utility_png", "tradeoff_png"):
        data = paths[key].read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    report = paths["report_md"].read_text()
    selection = best_multiplier(curve, max_utility_drop=0.5)
    assert f"**m = {selection.multiplier:g}** — {selection.sentence}" in report
    assert "| preference | 0.9" in report and "| utility | 0.9" in report
    assert "2 pair evaluations had the utility denominator clamped" in report
    assert "![preference vs m](preference.png)" in report


def test_write_report_without_enough_points_skips_the_fits(tmp_path: Path) -> None:
    paths = write_report(hand_curve(), tmp_path, max_utility_drop=0.6)

    report = paths["report_md"].read_text()
    assert "| preference | n/a | not fitted: a preference fit has 9 parameters" in report
    assert "| utility | n/a | not fitted:" in report
    assert paths["tradeoff_png"].read_bytes().startswith(PNG_SIGNATURE)


def clamp_gamed_curve(**extra) -> TradeoffCurve:
    """10 pairs; m = 1 costs every pair 0.5 utility; m = 2 costs pairs 0-4 three log-odds while pairs 5-9 jump
    into the clamped region (≈ 18.4), so the mean utility rises from -1 to 7.2 and m = 2 has the top preference."""
    utility = np.full((3, 10), -1.0)
    utility[1] = -1.5
    utility[2] = np.r_[[-4.0] * 5, [18.42] * 5]
    clamped = np.zeros((3, 10), dtype=bool)
    clamped[2, 5:] = True
    preference = np.array([[0.0] * 10, [1.0] * 10, [2.0] * 10])
    return TradeoffCurve.from_pairs([0.0, 1.0, 2.0], preference, utility, [0, 0, 5], pair_clamped=clamped, **extra)


def test_selection_never_picks_an_m_whose_utility_gain_comes_from_clamped_pairs(tmp_path: Path) -> None:
    curve = clamp_gamed_curve()
    assert curve.utility[2] == pytest.approx(7.21)  # the plain mean: a "gain" of 8.2 log-odds

    selection = best_multiplier(curve, max_utility_drop=1.0)

    assert selection.multiplier == 1.0 and selection.within_budget == (1.0,)
    assert selection.clamped == 0 and "0 of 10 pairs are clamped at m = 1." in selection.sentence
    assert "each pair clamped at that m counted at no more than its value at m = 0" in selection.rule
    generous = best_multiplier(curve, max_utility_drop=1.6)  # the real drop at m = 2 is 1.5
    assert generous.multiplier == 2.0 and generous.utility == pytest.approx(-2.5)
    assert "5 of 10 pairs are clamped at m = 2." in generous.sentence
    report = write_report(curve, tmp_path, max_utility_drop=1.0)["report_md"].read_text()
    assert f"Rule (m > 0): {selection.rule}" in report and "0 of 10 pairs are clamped at m = 1." in report


def test_selection_without_per_pair_arrays_caps_clamped_multipliers_at_the_baseline() -> None:
    curve = hand_curve()
    curve.clamped[-1] = 3  # m = 4: utility -4.0, below the baseline anyway
    curve.utility[-2] = 5.0  # m = 3 "rises" ...
    curve.clamped[-2] = 2  # ... with clamped pairs: it counts as no rise at all
    selection = best_multiplier(curve, max_utility_drop=0.6)
    assert selection.multiplier == 3.0 and selection.utility == -1.0 and selection.clamped == 2


def test_selection_on_answer_classes_uses_the_class_balanced_preference() -> None:
    """A subset with more "Yes" pairs makes a say-"Yes" control look good on the mean, not on the balanced mean."""
    pref = np.zeros((2, 10))
    pref[1] = np.r_[[-1.0] * 3, [1.0] * 7]  # m = 1 says "Yes": 7 Yes pairs gain, 3 No pairs lose
    curve = TradeoffCurve.from_pairs(
        [0.0, 1.0], pref, np.full((2, 10), -1.0), [0, 0], pair_class=[0] * 3 + [1] * 7, class_names=["No", "Yes"]
    )
    assert curve.preference[1] == pytest.approx(0.4)
    selection = best_multiplier(curve, max_utility_drop=1.0)
    assert selection.multiplier == 0.0 and selection.preference == 0.0
    assert "class-balanced preference log-odds (the mean over the answer classes No, Yes" in selection.rule


def test_report_refuses_fits_under_two_points_per_parameter(tmp_path: Path) -> None:
    m = np.r_[np.linspace(-2.0, 2.0, 9), 3.0]  # a 10-point grid: on main R² 0.99-1.00 with absurd parameters
    curve = TradeoffCurve.from_pairs(m.tolist(), np.tanh(m)[:, None] + np.zeros((10, 4)), np.zeros((10, 4)), [0] * 10)
    report = write_report(curve, tmp_path, max_utility_drop=1.0)["report_md"].read_text()
    assert "| preference | n/a | not fitted: a preference fit has 9 parameters and needs at least 18" in report
    assert "| utility | n/a | not fitted: a utility fit has 8 parameters and needs at least 16" in report
    assert "at least 2 distinct multipliers per fitted parameter" in report
