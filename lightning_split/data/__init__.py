"""Polarity-pair data: readers, named datasets, seeded splits, tokenisation and the Lightning data module.

``PolarityDataModule`` is imported lazily (it pulls in Lightning).
"""

from __future__ import annotations

from typing import Any

from lightning_split.data.batch import PairBatch
from lightning_split.data.pairs import BadRowError, DataFileError, PolarityPair
from lightning_split.data.readers import ANTHROPIC_EVALS, AXBENCH, PLAIN, FieldMap, ReadResult, read_pairs
from lightning_split.data.registry import DATA_DIR_ENV, DATASETS, resolve_data_dir, resolve_dataset
from lightning_split.data.splits import Splits, split_dataset, split_pool
from lightning_split.data.tokenize import PairTokenizer, TokenizedPair

__all__ = [
    "ANTHROPIC_EVALS",
    "AXBENCH",
    "DATASETS",
    "DATA_DIR_ENV",
    "PLAIN",
    "BadRowError",
    "DataFileError",
    "FieldMap",
    "PairBatch",
    "PairTokenizer",
    "PolarityDataModule",
    "PolarityPair",
    "ReadResult",
    "Splits",
    "TokenizedPair",
    "read_pairs",
    "resolve_data_dir",
    "resolve_dataset",
    "split_dataset",
    "split_pool",
]


def __getattr__(name: str) -> Any:
    if name == "PolarityDataModule":
        from lightning_split.data.datamodule import PolarityDataModule

        return PolarityDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
