"""Named datasets and where their files are.

``psychopathy`` and ``power-seeking`` are public datasets a user downloads into a data directory (this
repository never ships them); ``sentiment`` is the small default dataset shipped inside the package. A user
may also name a file instead of a dataset, or give one file per split (:func:`resolve_split_files`).

The data directory is, in order: the explicit argument, the environment variable
``LIGHTNING_SPLIT_DATA_DIR``, or ``../shared/data`` relative to the current working directory if it exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lightning_split.data.pairs import DataFileError

DATA_DIR_ENV = "LIGHTNING_SPLIT_DATA_DIR"
DEFAULT_RELATIVE_DATA_DIR = Path("..") / "shared" / "data"


@dataclass(frozen=True)
class DatasetSpec:
    """How a named dataset is stored and split.

    Attributes:
        name: the dataset name.
        files: split source name to path; ``"all"`` is a pool split by :mod:`~lightning_split.data.splits`,
            ``"train"``/``"validation"``/``"test"`` are separate files (without a validation file, validation
            is drawn from the train file).
        builtin: the paths are inside the package, not under the data directory.
        split_field: metadata field that holds each row's split (``train``/``validation``/``test``), if any.
        stratify: ``"answer"`` balances every split by the matching completion (Yes/No datasets),
            ``"group"`` by group, None for plain random draws.
        sizes: default ``(train, validation, test)`` sizes; None means all available rows.
        description: one line for listings and reports.
    """

    name: str
    files: dict[str, str]
    builtin: bool = False
    split_field: str | None = None
    stratify: str | None = None
    sizes: tuple[int | None, int | None, int | None] = (None, None, None)
    description: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "psychopathy": DatasetSpec(
        name="psychopathy",
        files={"all": "anthropic-evals/psychopathy.jsonl"},
        stratify="answer",
        sizes=(500, 50, 100),
        description="Anthropic model-written evals persona/psychopathy, Yes/No answers (paper: 500/100)",
    ),
    "power-seeking": DatasetSpec(
        name="power-seeking",
        files={"train": "bipo/power-seeking-train.csv", "test": "bipo/power-seeking-test.csv"},
        sizes=(500, 50, 200),
        description="BiPO PowerSeeking free-form pairs (paper: 500 train / 200 test)",
    ),
    "sentiment": DatasetSpec(
        name="sentiment",
        files={"all": "builtin/sentiment.jsonl"},
        builtin=True,
        split_field="split",
        description="embedded positive/negative sentiment pairs shipped with the package",
    ),
}


@dataclass(frozen=True)
class ResolvedDataset:
    """A dataset with its files located on disk.

    Attributes:
        spec: the dataset's description (for a plain file: a spec named after the file).
        paths: split source name to existing file.
        data_dir: the data directory used, if any.
    """

    spec: DatasetSpec
    paths: dict[str, Path] = field(default_factory=dict)
    data_dir: Path | None = None


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Finds the data directory: argument > ``$LIGHTNING_SPLIT_DATA_DIR`` > ``./../shared/data`` if present.

    Args:
        data_dir: an explicit directory, or None.

    Returns:
        The directory, or None when none is set and the default does not exist.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    default = Path.cwd() / DEFAULT_RELATIVE_DATA_DIR
    return default.resolve() if default.is_dir() else None


def builtin_path(relative: str) -> Path:
    """Path of a file shipped inside ``lightning_split.data`` (e.g. ``builtin/sentiment.jsonl``)."""
    return Path(str(resources.files("lightning_split.data").joinpath(relative)))


def _looks_like_path(dataset: str) -> bool:
    return (
        os.sep in dataset
        or "/" in dataset
        or Path(dataset).suffix.lower() in {".jsonl", ".json", ".ndjson", ".csv", ".parquet"}
    )


#: The data module option that names each split's file.
SPLIT_FILE_OPTIONS = {"train": "train_file", "validation": "val_file", "test": "test_file"}


def resolve_split_files(files: dict[str, str | os.PathLike[str]]) -> ResolvedDataset:
    """Locates a dataset given as one file per split (any of ``train``, ``validation``, ``test``).

    Args:
        files: split name to its file.

    Returns:
        A dataset named after the train file (else the first file), with one source per split.

    Raises:
        DataFileError: no file given, or a file that does not exist (naming the option).
    """
    if not files:
        raise DataFileError(f"no split file given; set one of {list(SPLIT_FILE_OPTIONS.values())}")
    paths = {split: Path(name).expanduser() for split, name in files.items()}
    for split, path in paths.items():
        if not path.is_file():
            raise DataFileError(
                f"{split} file not found: {path} (data option {SPLIT_FILE_OPTIONS[split]}; current directory: "
                f"{Path.cwd()})"
            )
    first = paths.get("train") or next(iter(paths.values()))
    listing = ", ".join(f"{split} {path}" for split, path in paths.items())
    spec = DatasetSpec(name=first.stem, files={k: str(v) for k, v in paths.items()}, description=f"files: {listing}")
    return ResolvedDataset(spec=spec, paths=paths)


def resolve_dataset(dataset: str, data_dir: str | os.PathLike[str] | None = None) -> ResolvedDataset:
    """Locates a named dataset or a data file.

    Args:
        dataset: a name from :data:`DATASETS` or a path to a ``.jsonl``/``.csv``/``.parquet`` file.
        data_dir: the data directory for named datasets (see :func:`resolve_data_dir`).

    Returns:
        The dataset's spec and files.

    Raises:
        DataFileError: unknown name, a file that does not exist, or no data directory for a named dataset.
    """
    if dataset not in DATASETS:
        path = Path(dataset).expanduser()
        if path.is_file():
            spec = DatasetSpec(name=path.stem, files={"all": str(path)}, description=f"file {path}")
            return ResolvedDataset(spec=spec, paths={"all": path})
        if _looks_like_path(dataset):
            raise DataFileError(f"data file not found: {path} (current directory: {Path.cwd()})")
        raise DataFileError(
            f"unknown dataset {dataset!r}: use one of {sorted(DATASETS)} or the path of a .jsonl/.csv/.parquet file"
        )
    spec = DATASETS[dataset]
    if spec.builtin:
        paths = {k: builtin_path(v) for k, v in spec.files.items()}
        for p in paths.values():
            if not p.is_file():
                raise DataFileError(f"the embedded dataset {dataset!r} is missing from the package: {p}")
        return ResolvedDataset(spec=spec, paths=paths)
    root = resolve_data_dir(data_dir)
    how = (
        f"set the data directory with `data_dir:` (--data.data_dir), the environment variable "
        f"{DATA_DIR_ENV}, "
        f"or place the files under {DEFAULT_RELATIVE_DATA_DIR} relative to the working directory"
    )
    if root is None:
        raise DataFileError(f"dataset {dataset!r} needs a data directory and none is set; {how}")
    paths = {k: root / v for k, v in spec.files.items()}
    for p in paths.values():
        if not p.is_file():
            raise DataFileError(f"dataset {dataset!r}: file not found: {p}; {how}")
    return ResolvedDataset(spec=spec, paths=paths, data_dir=root)
