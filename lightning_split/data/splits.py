"""Seeded, reproducible train/validation/test splits of polarity pairs.

Draws use a local ``random.Random(seed)``, never global state, so the same seed gives the same splits in
every process and run. From a pool, the test split is drawn first, then validation, then train: changing
``train_size`` never changes the test or validation rows, and changing ``val_size`` never changes the test
rows. With stratification every split takes as equal a share as possible of each stratum (shares differ
by at most one); for Psychopathy this gives equal numbers of "Yes" and "No" matching answers. The rows of
each split keep their file order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lightning_split.data.answers import answer_classes
from lightning_split.data.pairs import DataFileError, PolarityPair
from lightning_split.data.registry import DatasetSpec

SPLIT_NAMES = ("train", "validation", "test")
_ALIASES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}


@dataclass
class Splits:
    """The three splits of a dataset.

    Attributes:
        train: training pairs.
        validation: validation pairs (used to choose the multiplier / early stopping).
        test: held-out pairs for reported numbers.
    """

    train: list[PolarityPair] = field(default_factory=list)
    validation: list[PolarityPair] = field(default_factory=list)
    test: list[PolarityPair] = field(default_factory=list)

    def __getitem__(self, name: str) -> list[PolarityPair]:
        if name not in _ALIASES:
            raise KeyError(f"unknown split {name!r}; use one of {SPLIT_NAMES}")
        return getattr(self, _ALIASES[name])

    def sizes(self) -> dict[str, int]:
        """Number of pairs per split."""
        return {name: len(self[name]) for name in SPLIT_NAMES}


def stratum_of(stratify: str | None) -> Callable[[PolarityPair], str]:
    """The key function for a stratification mode.

    Args:
        stratify: ``"answer"`` (the matching completion, e.g. Yes/No), ``"group"`` or None.

    Returns:
        A function from pair to stratum key.
    """
    if stratify is None:
        return lambda pair: ""
    if stratify == "answer":
        return lambda pair: pair.matching
    if stratify == "group":
        return lambda pair: pair.group or ""
    raise ValueError(f"unknown stratify mode {stratify!r}; use 'answer', 'group' or None")


def auto_stratify(pairs: Sequence[PolarityPair]) -> str | None:
    """Chooses a stratification for a plain data file.

    Returns ``"answer"`` when the answers form classes (:func:`~lightning_split.data.answers.answer_classes`:
    a few matching answers, the same as the not-matching ones, like Yes/No), ``"group"`` when rows carry a
    group, None otherwise.
    """
    if answer_classes(pairs):
        return "answer"
    if any(p.group for p in pairs):
        return "group"
    return None


def draw(
    pairs: Sequence[PolarityPair],
    sizes: Sequence[tuple[str, int]],
    seed: int,
    stratify: str | None = None,
    what: str = "dataset",
) -> dict[str, list[PolarityPair]]:
    """Draws disjoint, stratified samples of the given sizes, in the given order.

    Args:
        pairs: the pool.
        sizes: ``(split name, size)`` in drawing order.
        seed: the seed of the local random generator.
        stratify: see :func:`stratum_of`.
        what: the pool's name for messages.

    Returns:
        Split name to pairs, each in pool order.

    Raises:
        ValueError: a size larger than what remains (in total or in one stratum).
    """
    rng = random.Random(seed)
    key = stratum_of(stratify)
    strata: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        strata.setdefault(key(pair), []).append(i)
    names = sorted(strata)
    for name in names:
        rng.shuffle(strata[name])
    out: dict[str, list[PolarityPair]] = {}
    remaining = len(pairs)
    for split, size in sizes:
        if size < 0:
            raise ValueError(f"{split} size must be >= 0, got {size}")
        if size > remaining:
            raise ValueError(
                f"{what}: {split} needs {size} pairs but only {remaining} remain after the earlier splits; "
                f"lower the {split} size"
            )
        base, extra = divmod(size, len(names)) if names else (0, 0)
        bonus = set(rng.sample(names, extra)) if extra else set()
        chosen: list[int] = []
        for name in names:
            need = base + (name in bonus)
            if need > len(strata[name]):
                label = {"answer": "matching answer", "group": "group"}.get(stratify or "", "stratum")
                raise ValueError(
                    f"{what}: a balanced {split} split of {size} needs {need} pairs with {label} {name!r} "
                    f"but only {len(strata[name])} remain; lower the {split} size"
                )
            chosen += strata[name][:need]
            strata[name] = strata[name][need:]
        remaining -= size
        out[split] = [pairs[i] for i in sorted(chosen)]
    return out


def split_pool(
    pairs: Sequence[PolarityPair],
    train_size: int,
    val_size: int,
    test_size: int,
    seed: int,
    stratify: str | None = None,
    what: str = "dataset",
) -> Splits:
    """Splits one pool into train/validation/test (drawn test first, then validation, then train).

    Args:
        pairs: the pool.
        train_size: pairs in train.
        val_size: pairs in validation.
        test_size: pairs in test.
        seed: random seed.
        stratify: see :func:`stratum_of`.
        what: the pool's name for messages.

    Returns:
        The splits.
    """
    order = [("test", test_size), ("validation", val_size), ("train", train_size)]
    parts = draw(pairs, order, seed, stratify, what)
    return Splits(train=parts["train"], validation=parts["validation"], test=parts["test"])


def _subset(
    pool: Sequence[PolarityPair], name: str, size: int | None, seed: int, stratify: str | None, what: str
) -> list[PolarityPair]:
    """The whole pool (``size`` None) or a seeded, stratified sample of ``size`` pairs of it."""
    return list(pool) if size is None else draw(pool, [(name, size)], seed, stratify, what)[name]


def split_files(
    pools: dict[str, list[PolarityPair]],
    train_size: int | None,
    val_size: int | None,
    test_size: int | None,
    seed: int,
    stratify: str | None = None,
) -> Splits:
    """Splits a dataset shipped as one file per split (BiPO's ``*-train.csv``/``*-test.csv``).

    A split with its own file takes the whole file, or a seeded sample of the size given. Without a validation
    file, validation is drawn from the train file first (``val_size``, default 10% of it) and train is the
    rest (or ``train_size`` of it). Without a test file the test split is empty (likewise train).

    Args:
        pools: ``train``/``validation``/``test`` to the rows of that split's file (any may be missing).
        train_size: pairs in train (None: all that remain).
        val_size: pairs in validation (None: the whole validation file, else 10% of the train file).
        test_size: pairs in test (None: the whole test file).
        seed: random seed.
        stratify: see :func:`stratum_of`.

    Returns:
        The splits.
    """
    train_pool = pools.get("train", [])
    if "validation" in pools:
        validation = _subset(pools["validation"], "validation", val_size, seed, stratify, "validation file")
        train = _subset(train_pool, "train", train_size, seed, stratify, "train file")
    else:
        val_size = round(0.1 * len(train_pool)) if val_size is None else val_size
        train_size = len(train_pool) - val_size if train_size is None else train_size
        parts = draw(train_pool, [("validation", val_size), ("train", train_size)], seed, stratify, "train file")
        validation, train = parts["validation"], parts["train"]
    test = _subset(pools.get("test", []), "test", test_size, seed, stratify, "test file")
    return Splits(train=train, validation=validation, test=test)


def split_by_field(
    pairs: Sequence[PolarityPair],
    field_name: str,
    sizes: tuple[int | None, int | None, int | None],
    seed: int,
    stratify: str | None = None,
) -> Splits:
    """Splits by each row's own split field (``train``/``validation``/``test``; ``val``/``dev`` accepted).

    Args:
        pairs: all rows.
        field_name: the metadata field holding the split.
        sizes: ``(train, validation, test)``; None keeps every row of that split, a number draws a seeded
            subset.
        seed: random seed.
        stratify: see :func:`stratum_of`.

    Returns:
        The splits.

    Raises:
        DataFileError: a row without a known split value.
    """
    groups: dict[str, list[PolarityPair]] = {name: [] for name in SPLIT_NAMES}
    for pair in pairs:
        value = pair.metadata.get(field_name)
        if value not in _ALIASES:
            raise DataFileError(f"{pair.where}: field {field_name!r} is {value!r}, expected one of {SPLIT_NAMES}")
        groups[_ALIASES[value]].append(pair)
    out = Splits()
    for name, size in zip(SPLIT_NAMES, sizes):
        setattr(out, name, _subset(groups[name], name, size, seed, stratify, f"{name} rows"))
    return out


def split_dataset(
    spec: DatasetSpec,
    pools: dict[str, list[PolarityPair]],
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    seed: int = 42,
) -> Splits:
    """Splits a resolved dataset the way its spec says, with the spec's default sizes where None is given.

    A dataset with a split field (or a single file whose every row has a ``split`` field: ``train``,
    ``validation``/``val``/``valid``/``dev`` or ``test``) uses it; one shipped as a file per split uses
    :func:`split_files` (validation drawn from the train file when it has no file of its own); any other
    single pool is drawn with defaults of 10% test, 10% validation and the rest train when the spec has no
    sizes.

    Args:
        spec: the dataset's spec (:data:`~lightning_split.data.registry.DATASETS` or a plain file's).
        pools: split source name (``all``, or ``train``/``validation``/``test``) to the pairs read from its file.
        train_size: pairs in train (None: the spec's default).
        val_size: pairs in validation (None: the spec's default).
        test_size: pairs in test (None: the spec's default).
        seed: random seed.

    Returns:
        The splits.
    """
    dtrain, dval, dtest = spec.sizes
    train_size = dtrain if train_size is None else train_size
    val_size = dval if val_size is None else val_size
    test_size = dtest if test_size is None else test_size
    everything = [p for pool in pools.values() for p in pool]
    stratify = spec.stratify if spec.stratify is not None or spec.split_field else auto_stratify(everything)
    if "all" not in pools:
        return split_files(pools, train_size, val_size, test_size, seed, stratify)
    pool = pools["all"]
    split_field = spec.split_field
    if split_field is None and pool and all("split" in p.metadata for p in pool):
        split_field = "split"
    if split_field is not None:
        return split_by_field(pool, split_field, (train_size, val_size, test_size), seed, stratify)
    n = len(pool)
    test_size = round(0.1 * n) if test_size is None else test_size
    val_size = round(0.1 * n) if val_size is None else val_size
    train_size = n - test_size - val_size if train_size is None else train_size
    return split_pool(pool, train_size, val_size, test_size, seed, stratify, what=spec.name)
