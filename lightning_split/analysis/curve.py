"""The result of a multiplier sweep: per-multiplier means of the two log-odds, optionally per-pair arrays."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics.functional import DEFAULT_REDUCTION, Reduction, check_reduction

COLUMNS: tuple[str, ...] = (
    "multiplier",
    "preference",
    "utility",
    "accuracy",
    "clamped",
    "n_pairs",
    "anti_steerable",
)
"""Keys of :meth:`TradeoffCurve.rows` and header of :meth:`TradeoffCurve.to_csv`, in order."""

_FORMAT = "lightning_split.tradeoff_curve"
_VERSION = 1
_PER_MULTIPLIER = ("preference", "utility", "accuracy", "clamped", "n_pairs", "anti_steerable")
_METADATA = ("reduction", "split", "form", "objective", "layer", "model", "extra")
_PER_PAIR = ("pair_preference", "pair_utility")


@dataclass
class TradeoffCurve:
    """Preference and utility log-odds of one steering control over a grid of multipliers.

    Lists indexed like ``multipliers`` hold one value per multiplier. On construction the grid is sorted
    ascending (every per-multiplier list and per-pair row is permuted with it); it must contain ``0`` and no
    duplicates.

    Attributes:
        multipliers: The multipliers m of the sweep.
        preference: Mean preference log-odds ``L_n - L_p`` over the pairs.
        utility: Mean utility log-odds over the pairs.
        accuracy: Pair accuracy, the share of pairs with ``L_p < L_n``.
        clamped: Number of pairs whose utility denominator was clamped.
        n_pairs: Number of pairs evaluated.
        anti_steerable: Share of pairs whose preference moved against the sign of m relative to m = 0
            (``None`` where undefined, e.g. at m = 0), or ``None`` if not measured.
        reduction: ``"sum"`` (sequence NLL) or ``"mean"`` (per-token NLL) behind ``L_p`` and ``L_n``.
        split: Data split, e.g. ``"test"``.
        form: Intervention form, e.g. ``"vector"``.
        objective: Training objective, e.g. ``"split"``.
        layer: Intervened layer.
        model: Model id or path.
        extra: Any further JSON-serialisable metadata.
        pair_preference: Optional per-pair preference log-odds, shape ``[n_multipliers, n_pairs]``.
        pair_utility: Optional per-pair utility log-odds, shape ``[n_multipliers, n_pairs]``.
    """

    multipliers: list[float]
    preference: list[float]
    utility: list[float]
    accuracy: list[float]
    clamped: list[int]
    n_pairs: list[int]
    anti_steerable: list[float | None] | None = None
    reduction: Reduction = DEFAULT_REDUCTION
    split: str = ""
    form: str = ""
    objective: str = ""
    layer: int | None = None
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    pair_preference: np.ndarray | None = None
    pair_utility: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.multipliers)
        check_reduction(self.reduction)
        for name in _PER_MULTIPLIER:
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} values for {n} multipliers")
        if len(set(self.multipliers)) != n:
            raise ValueError(f"duplicate multipliers in {self.multipliers}")
        if 0.0 not in self.multipliers:
            raise ValueError("the multiplier grid must contain 0 (the unsteered model)")
        order = sorted(range(n), key=lambda i: self.multipliers[i])
        self.multipliers = [float(self.multipliers[i]) for i in order]
        self.preference = [float(self.preference[i]) for i in order]
        self.utility = [float(self.utility[i]) for i in order]
        self.accuracy = [float(self.accuracy[i]) for i in order]
        self.clamped = [int(self.clamped[i]) for i in order]
        self.n_pairs = [int(self.n_pairs[i]) for i in order]
        if self.anti_steerable is not None:
            self.anti_steerable = [_optional_float(self.anti_steerable[i]) for i in order]
        for name in _PER_PAIR:
            values = getattr(self, name)
            if values is None:
                continue
            array = np.asarray(values, dtype=np.float64)
            if array.ndim != 2 or array.shape[0] != n:
                raise ValueError(f"{name} must have shape [{n}, n_pairs], got {array.shape}")
            if any(count != array.shape[1] for count in self.n_pairs):
                raise ValueError(f"{name} holds {array.shape[1]} pairs but n_pairs is {self.n_pairs}")
            setattr(self, name, array[order])

    @classmethod
    def from_pairs(
        cls,
        multipliers: Sequence[float],
        preference: np.ndarray,
        utility: np.ndarray,
        clamped: Sequence[int],
        **metadata: Any,
    ) -> TradeoffCurve:
        """Builds a curve, its means, pair accuracy and anti-steerable fraction from per-pair log-odds.

        A pair is anti-steerable at m > 0 when its preference is lower than at m = 0, and at m < 0 when it
        is higher; ties are not counted. The fraction is ``None`` at m = 0.

        Args:
            multipliers: The grid, containing 0.
            preference: Per-pair preference log-odds, shape ``[n_multipliers, n_pairs]``.
            utility: Per-pair utility log-odds, same shape.
            clamped: Number of clamped pairs per multiplier.
            **metadata: Metadata fields of :class:`TradeoffCurve` (``reduction``, ``split``, ...).

        Returns:
            The curve, holding the per-pair arrays.
        """
        pref = np.asarray(preference, dtype=np.float64)
        util = np.asarray(utility, dtype=np.float64)
        if pref.ndim != 2 or pref.shape != util.shape or pref.shape[0] != len(multipliers):
            raise ValueError(
                f"preference {pref.shape} and utility {util.shape} must both be [{len(multipliers)}, n_pairs]"
            )
        if 0.0 not in multipliers:
            raise ValueError("the multiplier grid must contain 0 (the unsteered model)")
        base = pref[list(multipliers).index(0.0)]
        anti: list[float | None] = []
        for m, row in zip(multipliers, pref):
            wrong_way = row < base if m > 0 else row > base
            anti.append(None if m == 0 else float(wrong_way.mean()))
        return cls(
            multipliers=list(multipliers),
            preference=pref.mean(axis=1).tolist(),
            utility=util.mean(axis=1).tolist(),
            accuracy=(pref > 0).mean(axis=1).tolist(),
            clamped=list(clamped),
            n_pairs=[pref.shape[1]] * len(multipliers),
            anti_steerable=anti,
            pair_preference=pref,
            pair_utility=util,
            **metadata,
        )

    @property
    def zero_index(self) -> int:
        """Position of m = 0 in the sorted grid."""
        return self.multipliers.index(0.0)

    def rows(self) -> list[dict[str, float | int | None]]:
        """One dict per multiplier keyed by :data:`COLUMNS`, ready for a table logger."""
        anti = self.anti_steerable or [None] * len(self.multipliers)
        columns = zip(self.multipliers, self.preference, self.utility, self.accuracy, self.clamped, self.n_pairs, anti)
        return [dict(zip(COLUMNS, values)) for values in columns]

    def metadata(self) -> dict[str, Any]:
        """The setup fields: reduction, split, form, objective, layer, model and extra."""
        return {name: getattr(self, name) for name in _METADATA}

    def to_csv(self, path: str | Path) -> Path:
        """Writes one row per multiplier under a :data:`COLUMNS` header; a missing value is an empty cell.

        Floats are written with ``repr`` precision, so reading them back gives the same numbers.
        """
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for row in self.rows():
                writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
        return path

    def to_json(self, path: str | Path) -> Path:
        """Writes the whole curve, metadata and per-pair arrays included, as JSON."""
        payload: dict[str, Any] = {"format": _FORMAT, "version": _VERSION, "multipliers": self.multipliers}
        payload.update({name: getattr(self, name) for name in _PER_MULTIPLIER})
        payload.update(self.metadata())
        for name in _PER_PAIR:
            values = getattr(self, name)
            payload[name] = None if values is None else values.tolist()
        path = Path(path)
        path.write_text(json.dumps(payload, indent=2))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> TradeoffCurve:
        """Reads a curve written by :meth:`to_json`."""
        payload = json.loads(Path(path).read_text())
        if payload.get("format") != _FORMAT or payload.get("version") != _VERSION:
            raise ValueError(f"{path} is not a version-{_VERSION} {_FORMAT} file")
        names = ("multipliers", *_PER_MULTIPLIER, *_METADATA)
        arrays = {
            name: None if payload[name] is None else np.asarray(payload[name], dtype=np.float64) for name in _PER_PAIR
        }
        return cls(**{name: payload[name] for name in names}, **arrays)


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)
