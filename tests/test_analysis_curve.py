"""Tests of the TradeoffCurve container (lightning_split.analysis.curve)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightning_split.analysis.curve import COLUMNS, TradeoffCurve


def small_curve(**overrides: object) -> TradeoffCurve:
    fields = {
        "multipliers": [1.0, -1.0, 0.0],
        "preference": [1.5, -1.0, 0.2],
        "utility": [-1.3, -1.4, -1.0],
        "accuracy": [0.9, 0.1, 0.5],
        "clamped": [2, 0, 1],
        "n_pairs": [10, 10, 10],
    }
    return TradeoffCurve(**{**fields, **overrides})


def test_the_grid_is_sorted_with_every_column() -> None:
    curve = small_curve(anti_steerable=[0.1, 0.2, None])

    assert curve.multipliers == [-1.0, 0.0, 1.0]
    assert curve.preference == [-1.0, 0.2, 1.5]
    assert curve.clamped == [0, 1, 2]
    assert curve.anti_steerable == [0.2, None, 0.1]
    assert curve.zero_index == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"multipliers": [1.0, -1.0, 2.0]}, "must contain 0"),
        ({"multipliers": [1.0, 1.0, 0.0]}, "duplicate"),
        ({"utility": [0.0, 0.0]}, "utility has 2 values"),
        ({"reduction": "max"}, "reduction"),
        ({"pair_preference": np.zeros((3, 4))}, "holds 4 pairs"),
    ],
)
def test_invalid_curves_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_curve(**overrides)


def test_from_pairs_computes_means_accuracy_and_anti_steerable_fraction() -> None:
    preference = np.array([[0.5, -2.0, -1.0, 1.0], [0.0, 1.0, -1.0, 2.0], [1.0, 3.0, -2.0, 2.0]])
    utility = np.array([[-2.0, -2.0, -3.0, -1.0], [-1.0, -1.0, -1.0, -1.0], [-1.5, -1.5, -1.5, -1.5]])

    curve = TradeoffCurve.from_pairs([-1.0, 0.0, 1.0], preference, utility, [0, 0, 3], split="test")

    assert curve.preference == pytest.approx([-0.375, 0.5, 1.0])
    assert curve.utility == pytest.approx([-2.0, -1.0, -1.5])
    assert curve.accuracy == pytest.approx([0.5, 0.5, 0.75])
    assert curve.anti_steerable == [0.25, None, 0.25]  # pair 0 rises at m = -1; pair 2 falls at m = +1
    assert curve.n_pairs == [4, 4, 4] and curve.clamped == [0, 0, 3] and curve.split == "test"
    np.testing.assert_array_equal(curve.pair_preference, preference)


def test_rows_follow_columns() -> None:
    rows = small_curve().rows()

    assert [list(row) for row in rows] == [list(COLUMNS)] * 3
    assert rows[0] == {
        "multiplier": -1.0,
        "preference": -1.0,
        "utility": -1.4,
        "accuracy": 0.1,
        "clamped": 0,
        "n_pairs": 10,
        "anti_steerable": None,
    }


def test_json_round_trip_keeps_metadata_and_pair_arrays(tmp_path: Path) -> None:
    pairs = np.arange(6.0).reshape(3, 2) / 7
    curve = small_curve(
        n_pairs=[2, 2, 2],
        reduction="mean",
        split="train",
        form="lora",
        objective="split",
        layer=14,
        model="smollm2",
        extra={"seed": 3},
        pair_utility=pairs,
    )

    loaded = TradeoffCurve.from_json(curve.to_json(tmp_path / "curve.json"))

    assert loaded.rows() == curve.rows()
    assert loaded.metadata() == curve.metadata()
    assert loaded.pair_preference is None
    np.testing.assert_array_equal(loaded.pair_utility, curve.pair_utility)
