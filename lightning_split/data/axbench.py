"""AxBench concept data: positive rows by concept, the paper's 64/8 re-split, negatives made by the backbone.

An AxBench ``train_data.parquet`` (Concept10 ships in the data directory as ``axbench/concept10-train.parquet``;
Concept500 has the same columns) holds per concept ``positive`` rows, an instruction ``input`` and a
concept-laden ``output``, plus shared ``negative`` rows (``concept_id`` −1) that answer *other* instructions and
so cannot be a pair's negative. As in the paper, each positive ``output`` is paired with the backbone's own
unsteered reply to the same ``input`` (:mod:`lightning_split.data.axbench_negatives`), and the rows of each
concept are re-split with a seed into 64 train / 8 test (validation 0 unless asked for).

Splitting is per concept with its own generator (seeded by the seed and the concept id), so selecting other
concepts never changes a concept's split. The test rows are drawn first, and only among rows whose instruction
appears once in the concept (Concept10's concept 4 has one instruction twice), so a test instruction is never
also a train instruction; validation is drawn next, train is the rest (or ``train`` of it).

Until the backbone is known, the pairs of :func:`pending_splits` carry an empty ``not_matching`` (their
metadata says ``negative: pending``); :func:`complete_splits` fills them in. The judged items of a concept,
its test instructions with the concept's description, come from :func:`axbench_eval_items`.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

from lightning_split.data.axbench_negatives import NegativeSettings, ReplyCache
from lightning_split.data.pairs import BadRowError, DataFileError, PolarityPair
from lightning_split.data.registry import ResolvedDataset, resolve_dataset
from lightning_split.data.splits import SPLIT_NAMES, Splits
from lightning_split.errors import OptionError

TRAIN_COLUMNS = ("input", "output", "concept_id", "category")
"""The columns of an AxBench ``train_data.parquet`` that are read (others, e.g. ``output_concept``, are kept)."""

DEFAULT_SIZES = (64, 0, 8)
"""Per concept ``(train, validation, test)``: the paper's re-split of the 72 positive rows."""

PENDING = "pending"
"""``metadata["negative"]`` of a pair whose negative the backbone has not generated yet."""

METADATA_SIBLING = "metadata.jsonl"
"""The concept descriptions beside a downloaded ``train_data.parquet`` (AxBench's ``generate/`` folder)."""


@dataclass(frozen=True)
class ConceptRow:
    """One positive AxBench row.

    Attributes:
        concept_id: the concept.
        instruction: the ``input`` (the raw instruction, not chat-templated).
        output: the concept-laden answer (stripped).
        row: the 1-based parquet row.
        source: the parquet file.
        extra: the row's other columns.
    """

    concept_id: int
    instruction: str
    output: str
    row: int
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AxBenchData:
    """The positive rows of the selected concepts and every concept's description.

    Attributes:
        rows: concept id to its positive rows, in file order, concepts in ascending id.
        concepts: concept id to its description (all concepts of the file).
        source: the parquet file.
    """

    rows: dict[int, list[ConceptRow]]
    concepts: dict[int, str]
    source: str


class EvalItem(TypedDict):
    """One judged item: a raw instruction and the description of the concept to steer towards."""

    instruction: str
    concept: str


def is_axbench_train_file(path: str | Path) -> bool:
    """Whether ``path`` is a parquet file with the AxBench training columns (:data:`TRAIN_COLUMNS`)."""
    if Path(path).suffix.lower() != ".parquet" or not Path(path).is_file():
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return set(TRAIN_COLUMNS) <= set(pq.read_schema(path).names)
    except (pa.ArrowException, OSError):  # not a parquet file: the plain reader reports it
        return False


def read_descriptions(path: str | Path) -> dict[int, str]:
    """Concept descriptions from an AxBench ``metadata.jsonl`` (``concept_id``, ``concept`` per line).

    Raises:
        DataFileError: missing file, a line that is not JSON or lacks the two fields.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"AxBench concept metadata not found: {path}")
    out: dict[int, str] = {}
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
            out[int(record["concept_id"])] = str(record["concept"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DataFileError(
                f"{path}, line {line}: not a concept record ({type(err).__name__}: {err}); each line needs "
                '{"concept_id": <int>, "concept": "<description>"}'
            ) from None
    return out


def _select(available: Sequence[int], concepts: Sequence[int] | None, source: str) -> list[int]:
    if concepts is None:
        return sorted(available)
    unknown = [c for c in concepts if c not in available]
    if unknown:
        raise OptionError(
            f"data option concepts (data.concepts) has {unknown}, not concept ids of {source}; its concepts are "
            f"{sorted(available)}"
        )
    return sorted(set(concepts))


def read_axbench(
    path: str | Path, concepts: Sequence[int] | None = None, metadata: str | Path | None = None
) -> AxBenchData:
    """Reads the positive rows of the selected concepts from an AxBench ``train_data.parquet``.

    Args:
        path: the parquet file (Concept10, Concept500 or any file with :data:`TRAIN_COLUMNS`).
        concepts: concept ids to keep (None: all of the file).
        metadata: the concepts' ``metadata.jsonl``; None: ``metadata.jsonl`` beside the file if there is one,
            else the descriptions in the rows' ``output_concept`` column.

    Returns:
        The rows and descriptions.

    Raises:
        DataFileError: missing file or columns, or no description for a selected concept.
        OptionError: a concept id the file does not have (names the option ``concepts``).
        BadRowError: a positive row with an empty or non-string instruction or output.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"AxBench data file not found: {path}")
    table = pq.read_table(path)
    missing = [c for c in TRAIN_COLUMNS if c not in table.column_names]
    if missing:
        raise DataFileError(
            f"{path}: columns {missing} of an AxBench train_data.parquet are missing (columns: "
            f"{table.column_names}); pairs that already have both outputs (winning_output/losing_output) are "
            "read as a plain data file instead"
        )
    positives = [(i, r) for i, r in enumerate(table.to_pylist(), start=1) if r["category"] == "positive"]
    chosen = _select(sorted({int(r["concept_id"]) for _, r in positives}), concepts, str(path))
    rows: dict[int, list[ConceptRow]] = {c: [] for c in chosen}
    described: dict[int, str] = {}
    for line, record in positives:
        concept = int(record["concept_id"])
        if isinstance(record.get("output_concept"), str):
            described.setdefault(concept, record["output_concept"])
        if concept not in rows:
            continue
        for name in ("input", "output"):
            if not isinstance(record[name], str) or not record[name].strip():
                raise BadRowError(path, line, f"field {name!r} of a positive row is empty or not a string")
        extra = {k: v for k, v in record.items() if k not in ("input", "output")}
        rows[concept].append(ConceptRow(concept, record["input"], record["output"].strip(), line, str(path), extra))
    sibling = path.with_name(METADATA_SIBLING)
    descriptions = read_descriptions(metadata or sibling) if metadata or sibling.is_file() else described
    undescribed = [c for c in chosen if c not in descriptions]
    if undescribed:
        raise DataFileError(f"{metadata or path}: no description for concepts {undescribed}")
    return AxBenchData(rows=rows, concepts=descriptions, source=str(path))


def split_concept(
    rows: Sequence[ConceptRow], sizes: tuple[int | None, int | None, int | None], seed: int
) -> dict[str, list[ConceptRow]]:
    """Splits one concept's rows into train/validation/test (see the module docstring for the rules).

    Args:
        rows: the concept's positive rows.
        sizes: ``(train, validation, test)``; None takes :data:`DEFAULT_SIZES`'s value, except train: None is all
            rows left.
        seed: the seed (with the concept id, it seeds this concept's generator).

    Returns:
        Split name to rows, in file order.

    Raises:
        OptionError: a size larger than what the concept has.
    """
    train, val, test = sizes
    val = DEFAULT_SIZES[1] if val is None else val
    test = DEFAULT_SIZES[2] if test is None else test
    concept = rows[0].concept_id if rows else -1
    rng = random.Random(f"axbench:{seed}:{concept}")
    counts = Counter(r.instruction for r in rows)
    unique = [i for i, r in enumerate(rows) if counts[r.instruction] == 1]
    if test > len(unique):
        raise OptionError(
            f"data option test_size is {test} per concept but concept {concept} has {len(unique)} rows with a "
            "unique instruction; lower test_size"
        )
    test_idx = set(rng.sample(unique, test))
    rest = [i for i in range(len(rows)) if i not in test_idx]
    train = len(rest) - val if train is None else train
    if val + train > len(rest):
        raise OptionError(
            f"data options train_size {train} + val_size {val} per concept exceed the {len(rest)} rows of concept "
            f"{concept} left after its {test} test rows; lower them"
        )
    rng.shuffle(rest)
    parts = {"test": test_idx, "validation": set(rest[:val]), "train": set(rest[val : val + train])}
    return {name: [rows[i] for i in sorted(parts[name])] for name in SPLIT_NAMES}


def _pending_pair(row: ConceptRow) -> PolarityPair:
    metadata = {**row.extra, "concept_id": row.concept_id, "negative": PENDING}
    return PolarityPair(row.instruction, row.output, "", metadata, row.source, row.row, str(row.concept_id))


def pending_splits(data: AxBenchData, sizes: tuple[int | None, int | None, int | None], seed: int) -> Splits:
    """The splits of every selected concept as pairs whose negative is still to be generated.

    Args:
        data: the rows read by :func:`read_axbench`.
        sizes: per concept ``(train, validation, test)`` (see :func:`split_concept`).
        seed: the split seed.

    Returns:
        The splits, concepts in ascending id, rows in file order within a concept.
    """
    out = Splits()
    for rows in data.rows.values():
        for name, part in split_concept(rows, sizes, seed).items():
            out[name].extend(_pending_pair(r) for r in part)
    return out


def complete_splits(
    splits: Splits,
    replies: ReplyCache,
    prompt_ids: Any,
    skip_bad_rows: bool = False,
) -> tuple[Splits, list[BadRowError]]:
    """Fills in every pending negative with the backbone's unsteered reply to the pair's instruction.

    Replies are generated (or read from the cache) concept by concept, for the concept's pairs of every split at
    once, so a concept's replies do not depend on which other concepts are selected.

    Args:
        splits: the splits of :func:`pending_splits`.
        replies: the backbone's reply cache.
        prompt_ids: turns an instruction into prompt token ids (``PairTokenizer.prompt_ids``).
        skip_bad_rows: leave out a pair whose reply is empty or equals its positive output, instead of raising.

    Returns:
        The completed splits and the pairs left out (as errors naming their rows).

    Raises:
        BadRowError: an empty reply or one identical to the positive output, without ``skip_bad_rows``.
    """
    from lightning_split.progress import ProgressLog

    by_concept: dict[str | None, list[PolarityPair]] = {}
    for name in SPLIT_NAMES:
        for pair in splits[name]:
            by_concept.setdefault(pair.group, []).append(pair)
    prompts = {g: [prompt_ids(p.question) for p in pairs] for g, pairs in by_concept.items()}
    todo = sum(len(p) for g, p in prompts.items() if replies.cached(p) is None)
    answer: dict[int, str] = {}
    progress = ProgressLog("AxBench negatives (unsteered replies)", todo, unit="reply") if todo else nullcontext()
    with progress as advance:
        for group, pairs in by_concept.items():
            for pair, text in zip(pairs, replies.replies(prompts[group], advance)):
                answer[id(pair)] = text
    out, bad = Splits(), []
    for name in SPLIT_NAMES:
        for pair in splits[name]:
            text = answer[id(pair)]
            problem = "the backbone's reply is empty" if not text else None
            problem = problem or ("the backbone's reply equals the positive output" if text == pair.matching else None)
            if problem:
                bad.append(pair.bad(f"{problem} (concept {pair.group}); it cannot be a negative"))
                if not skip_bad_rows:
                    raise bad[-1]
                continue
            out[name].append(replace(pair, not_matching=text, metadata={**pair.metadata, "negative": "backbone"}))
    return out, bad


def resolve_axbench(dataset: str, data_dir: str | os.PathLike[str] | None = None) -> ResolvedDataset:
    """Locates an AxBench dataset (a registered name or a parquet path) and checks it is one.

    Raises:
        DataFileError: unknown dataset, missing file, or not an AxBench training file.
    """
    resolved = resolve_dataset(dataset, data_dir)
    if resolved.spec.kind != "axbench":
        raise DataFileError(f"dataset {dataset!r} is not an AxBench train_data.parquet (columns {TRAIN_COLUMNS})")
    return resolved


def read_resolved(resolved: ResolvedDataset, concepts: Sequence[int] | None = None) -> AxBenchData:
    """Reads a resolved AxBench dataset (its ``all`` parquet and, if listed, its ``metadata`` file)."""
    return read_axbench(resolved.paths["all"], concepts, resolved.paths.get("metadata"))


def axbench_eval_items(
    concept_id: int,
    dataset: str = "axbench",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 42,
    test_size: int = DEFAULT_SIZES[2],
) -> list[EvalItem]:
    """The judged items of one concept: its held-out test instructions, each with the concept's description.

    They are the instructions of the test pairs of a data module with the same dataset, seed and ``test_size``
    (the test rows are drawn first, so train and validation sizes do not change them).

    Args:
        concept_id: the concept.
        dataset: ``axbench``, ``axbench-concept500`` or the path of an AxBench ``train_data.parquet``.
        data_dir: the data directory for named datasets.
        seed: the split seed (the data module's ``seed``).
        test_size: test rows per concept.

    Returns:
        ``[{"instruction", "concept"}, ...]`` in file order.

    Raises:
        OptionError: an unknown concept id.
        DataFileError: the dataset cannot be found or read.
    """
    data = read_resolved(resolve_axbench(dataset, data_dir), [concept_id])
    test = split_concept(data.rows[concept_id], (None, 0, test_size), seed)["test"]
    return [EvalItem(instruction=r.instruction, concept=data.concepts[concept_id]) for r in test]


__all__ = [
    "DEFAULT_SIZES",
    "AxBenchData",
    "ConceptRow",
    "EvalItem",
    "NegativeSettings",
    "axbench_eval_items",
    "complete_splits",
    "is_axbench_train_file",
    "pending_splits",
    "read_axbench",
    "read_descriptions",
    "split_concept",
]
