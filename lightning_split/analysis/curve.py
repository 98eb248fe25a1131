"""The result of a multiplier sweep: per-multiplier means of the two log-odds, optionally per-pair arrays."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.answers import class_label
from ..grid import check_grid
from ..metrics.functional import DEFAULT_REDUCTION, Reduction, check_reduction, class_means

COLUMNS: tuple[str, ...] = (  # per-class columns follow when answers form classes: TradeoffCurve.columns
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
_METADATA = ("reduction", "split", "form", "objective", "layer", "model", "extra", "class_names", "sampling")
_PER_PAIR = ("pair_preference", "pair_utility", "pair_clamped")
_PAIR_IDS = ("pair_index", "pair_class")


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
        class_names: Names of the answer classes (``["No", "Yes"]``), ``[]`` for free-text answers.
        sampling: How the pairs were chosen, e.g. ``{"evaluated": 100, "max_pairs": 40, "seed": 0}`` for a
            seeded subset balanced by answer class of the 100 pairs evaluated; ``{}`` when every pair was swept.
        pair_preference: Optional per-pair preference log-odds, shape ``[n_multipliers, n_pairs]``.
        pair_utility: Optional per-pair utility log-odds, shape ``[n_multipliers, n_pairs]``.
        pair_clamped: Optional per-pair clamp mask of the utility denominator, ``[n_multipliers, n_pairs]``.
        pair_index: Optional index (row inside the split) of each pair, in the order of the per-pair columns.
        pair_class: Optional answer class id of each pair (``-1``: none), same order.
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
    class_names: list[str] = field(default_factory=list)
    sampling: dict[str, Any] = field(default_factory=dict)
    pair_preference: np.ndarray | None = None
    pair_utility: np.ndarray | None = None
    pair_clamped: np.ndarray | None = None
    pair_index: list[int] | None = None
    pair_class: list[int] | None = None

    def __post_init__(self) -> None:
        n = len(self.multipliers)
        check_reduction(self.reduction)
        for name in _PER_MULTIPLIER:
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} values for {n} multipliers")
        check_grid(self.multipliers)
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
            array = np.asarray(values, dtype=bool if name == "pair_clamped" else np.float64)
            if array.ndim != 2 or array.shape[0] != n:
                raise ValueError(f"{name} must have shape [{n}, n_pairs], got {array.shape}")
            if any(count != array.shape[1] for count in self.n_pairs):
                raise ValueError(f"{name} holds {array.shape[1]} pairs but n_pairs is {self.n_pairs}")
            setattr(self, name, array[order])
        for name in _PAIR_IDS:
            values = getattr(self, name)
            if values is None:
                continue
            if any(count != len(values) for count in self.n_pairs):
                raise ValueError(f"{name} holds {len(values)} pairs but n_pairs is {self.n_pairs}")
            setattr(self, name, [int(v) for v in values])

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
        check_grid(multipliers)
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

    @property
    def classes(self) -> list[int]:
        """The answer class ids present among the pairs (``[]``: free text, or no per-pair data)."""
        if self.pair_class is None or self.pair_preference is None:
            return []
        return sorted({c for c in self.pair_class if c >= 0})

    def class_label(self, class_index: int) -> str:
        """The name of an answer class (``"Yes"``), ``"class3"`` when the curve has no name for it."""
        return class_label(self.class_names, class_index)

    def class_split(self) -> dict[str, dict[str, list[float]]]:
        """Accuracy and mean preference log-odds per answer class and multiplier.

        Returns:
            ``{class name: {"accuracy": [...], "preference": [...]}}`` (lists indexed like ``multipliers``);
            ``{}`` when the answers form no classes.
        """
        if not self.classes:
            return {}
        assert self.pair_preference is not None and self.pair_class is not None
        pref = torch.from_numpy(self.pair_preference)
        ids = torch.tensor(self.pair_class)
        n = max(self.classes) + 1
        means = {}
        for value, per_pair in (("accuracy", (pref > 0).to(torch.float64)), ("preference", pref)):
            sums, counts = class_means(per_pair, ids, n)
            means[value] = (sums / counts).numpy()
        return {self.class_label(c): {value: means[value][:, c].tolist() for value in means} for c in self.classes}

    def balanced(self, value: str) -> list[float] | None:
        """The mean over answer classes of each class's ``value`` (``"accuracy"``: the balanced accuracy, or
        ``"preference"``) per multiplier; ``None`` when the answers form no classes."""
        split = self.class_split()
        if not split:
            return None
        return np.mean([per_class[value] for per_class in split.values()], axis=0).tolist()

    def columns(self) -> list[str]:
        """Keys of :meth:`rows`: :data:`COLUMNS`, then, when answers form classes, ``balanced_accuracy`` and
        ``accuracy[<class>]`` / ``preference[<class>]`` for each class."""
        split = self.class_split()
        if not split:
            return list(COLUMNS)
        by_class = [f"{value}[{name}]" for name in split for value in ("accuracy", "preference")]
        return [*COLUMNS, "balanced_accuracy", *by_class]

    def rows(self) -> list[dict[str, float | int | None]]:
        """One dict per multiplier keyed by :meth:`columns`, ready for a table logger."""
        anti = self.anti_steerable or [None] * len(self.multipliers)
        columns = zip(self.multipliers, self.preference, self.utility, self.accuracy, self.clamped, self.n_pairs, anti)
        rows: list[dict[str, float | int | None]] = [dict(zip(COLUMNS, values)) for values in columns]
        split = self.class_split()
        if split:
            balanced = self.balanced("accuracy")
            assert balanced is not None
            for i, row in enumerate(rows):
                row["balanced_accuracy"] = balanced[i]
                for name, per_class in split.items():
                    for value in ("accuracy", "preference"):
                        row[f"{value}[{name}]"] = per_class[value][i]
        return rows

    def metadata(self) -> dict[str, Any]:
        """The setup fields: reduction, split, form, objective, layer, model and extra."""
        return {name: getattr(self, name) for name in _METADATA}

    def to_csv(self, path: str | Path) -> Path:
        """Writes one row per multiplier under a :meth:`columns` header; a missing value is an empty cell.

        Floats are written with ``repr`` precision, so reading them back gives the same numbers.
        """
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            columns = self.columns()
            writer.writerow(columns)
            for row in self.rows():
                writer.writerow(["" if row[c] is None else row[c] for c in columns])
        return path

    def to_json(self, path: str | Path) -> Path:
        """Writes the whole curve, metadata, per-pair arrays and the pairs used (``pair_index``) included, as
        JSON; with answer classes also the per-class accuracy and preference (``class_split``)."""
        payload: dict[str, Any] = {"format": _FORMAT, "version": _VERSION, "multipliers": self.multipliers}
        payload.update({name: getattr(self, name) for name in _PER_MULTIPLIER})
        payload.update(self.metadata())
        payload["class_split"] = self.class_split()
        for name in (*_PER_PAIR, *_PAIR_IDS):
            values = getattr(self, name)
            payload[name] = values.tolist() if isinstance(values, np.ndarray) else values
        path = Path(path)
        path.write_text(json.dumps(payload, indent=2))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> TradeoffCurve:
        """Reads a curve written by :meth:`to_json`."""
        payload = json.loads(Path(path).read_text())
        if payload.get("format") != _FORMAT or payload.get("version") != _VERSION:
            raise ValueError(f"{path} is not a version-{_VERSION} {_FORMAT} file")
        names = ("multipliers", *_PER_MULTIPLIER, *_METADATA, *_PER_PAIR, *_PAIR_IDS)
        return cls(**{name: payload[name] for name in names if payload.get(name) is not None})


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)
