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
