"""Readers that turn JSONL, CSV and parquet files into validated polarity pairs through a field map.

Every row is checked: the three mapped fields must be present and be strings, the stripped completions must
be non-empty and different from each other. A row that fails raises :class:`BadRowError` naming its file
and line, unless ``skip_bad_rows`` is set, in which case it is left out and listed in
:attr:`ReadResult.skipped` so that the caller can report the count. Questions are kept as written (an
empty question is allowed: two rows of the PowerSeeking train file have one); completions are stripped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lightning_split.data.pairs import BadRowError, DataFileError, PolarityPair, location


@dataclass(frozen=True)
class FieldMap:
    """Which fields of a row hold the question and the two completions.

    Attributes:
        question: field of the user query.
        matching: field of the concept-positive completion ``A_p``.
        not_matching: field of the concept-negative completion ``A_n``.
        group: optional field that groups rows (AxBench ``concept_id``); stored in ``PolarityPair.group``.
    """

    question: str = "question"
    matching: str = "matching"
    not_matching: str = "not_matching"
    group: str | None = None

    def required(self) -> tuple[str, ...]:
        """The fields every row must have (question, matching, not matching, and group if set)."""
        names = (self.question, self.matching, self.not_matching)
        return names + ((self.group,) if self.group else ())


ANTHROPIC_EVALS = FieldMap("question", "answer_matching_behavior", "answer_not_matching_behavior")
"""Anthropic model-written evals JSONL (answers such as ``" Yes"``/``" No"``)."""
PLAIN = FieldMap("question", "matching", "not_matching")
"""The question/matching/not_matching layout (BiPO PowerSeeking CSV, the embedded dataset)."""
AXBENCH = FieldMap("input", "winning_output", "losing_output", group="concept_id")
"""AxBench parquet, grouped by concept."""

PRESETS: dict[str, FieldMap] = {"anthropic-evals": ANTHROPIC_EVALS, "plain": PLAIN, "axbench": AXBENCH}
FORMATS = ("auto", "jsonl", "csv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}

FieldMapLike = FieldMap | Mapping[str, Any] | str | None


@dataclass
class ReadResult:
    """The pairs read from one file and the rows left out.

    Attributes:
        pairs: the valid pairs, in file order.
        skipped: ``(line, reason)`` of each row left out with ``skip_bad_rows`` (empty otherwise).
        source: the file read.
        field_map: the field map used.
    """

    pairs: list[PolarityPair]
    skipped: list[tuple[int, str]] = field(default_factory=list)
    source: str = ""
    field_map: FieldMap = PLAIN

    def groups(self) -> dict[str, list[PolarityPair]]:
        """Pairs by group value (AxBench concept) in first-seen order; ungrouped ones under ``""``."""
        out: dict[str, list[PolarityPair]] = {}
        for pair in self.pairs:
            out.setdefault(pair.group or "", []).append(pair)
        return out


def detect_field_map(columns: Iterable[str]) -> FieldMap | None:
    """Picks the preset whose required fields are all among ``columns``.

    Args:
        columns: the file's column names (CSV header, parquet schema, keys of the first JSONL row).

    Returns:
        The matching preset, or None when none fits.
    """
    cols = set(columns)
    for preset in (AXBENCH, ANTHROPIC_EVALS, PLAIN):
        if set(preset.required()) <= cols:
            return preset
    return None


def resolve_field_map(field_map: FieldMapLike, columns: Iterable[str], source: str | Path) -> FieldMap:
    """Turns the user's field map (object, preset name, partial mapping or None) into a :class:`FieldMap`.

    A partial mapping such as ``{"group": "topic"}`` overrides the preset detected from ``columns``.

    Args:
        field_map: a FieldMap, a preset name (``anthropic-evals``, ``plain``, ``axbench``), a mapping of
            FieldMap attribute names to column names, or None to detect from the columns.
        columns: the file's column names.
        source: the file, for messages.

    Returns:
        The field map.

    Raises:
        DataFileError: unknown preset or keys, or nothing detected and nothing given.
    """
    if isinstance(field_map, FieldMap):
        return field_map
    if isinstance(field_map, str):
        if field_map not in PRESETS:
            raise DataFileError(f"unknown field map preset {field_map!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[field_map]
    columns = list(columns)
    base = detect_field_map(columns)
    overrides = {k: v for k, v in (field_map or {}).items() if v is not None or k == "group"}
    unknown = set(overrides) - {f.name for f in fields(FieldMap)}
    if unknown:
        keys = "question/matching/not_matching/group"
        raise DataFileError(f"unknown field map keys {sorted(unknown)}; use {keys}")
    if base is None and not overrides:
        raise DataFileError(
            f"{source}: cannot tell which fields hold the question and the completions (columns: {columns}); "
            "pass a field map, e.g. question_field/matching_field/not_matching_field"
        )
    return replace(base or PLAIN, **overrides)


def _text(record: Mapping[str, Any], name: str) -> str:
    if name not in record or record[name] is None:
        raise ValueError(f"missing field {name!r}")
    value = record[name]
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} is not a string (got {type(value).__name__} {value!r})")
    return value


def make_pair(record: Mapping[str, Any], fmap: FieldMap, source: str, line: int) -> PolarityPair:
    """Validates one row and builds its pair (completions stripped).

    Args:
        record: the row as a mapping of field name to value.
        fmap: the field map.
        source: the file, for messages.
        line: the row's 1-based line (or parquet row) number.

    Returns:
        The pair, with the row's other fields as metadata.

    Raises:
        BadRowError: missing or non-string field, empty completion, identical completions.
    """
    try:
        question = _text(record, fmap.question)
        matching = _text(record, fmap.matching).strip()
        not_matching = _text(record, fmap.not_matching).strip()
        if fmap.group and record.get(fmap.group) is None:
            raise ValueError(f"missing field {fmap.group!r}")
    except ValueError as err:
        raise BadRowError(source, line, str(err)) from None
    for name, text in ((fmap.matching, matching), (fmap.not_matching, not_matching)):
        if not text:
            raise BadRowError(source, line, f"empty completion in field {name!r}")
    if matching == not_matching:
        raise BadRowError(source, line, f"identical completions for both polarities ({matching[:60]!r})")
    used = {fmap.question, fmap.matching, fmap.not_matching}
    metadata = {k: v for k, v in record.items() if k not in used}
    group = str(record[fmap.group]) if fmap.group else None
    return PolarityPair(question, matching, not_matching, metadata, source=source, line=line, group=group)


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yields ``(line, parsed object or BadRowError)`` for every non-blank line."""
    with path.open(encoding="utf-8-sig") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                yield line, json.loads(text)
            except json.JSONDecodeError as err:
                yield line, BadRowError(path, line, f"malformed JSON ({err.msg} at column {err.colno})")


def _no_rows(path: Path, what: str) -> DataFileError:
    return DataFileError(
        f"{path} has no rows ({what}); a data file needs one row per pair with a question and two different "
        "completions (question/matching/not_matching, or the fields named by the field map)"
    )


def _read_jsonl(path: Path, field_map: FieldMapLike) -> tuple[FieldMap, Iterator[tuple[int, Any]]]:
    if next(_jsonl_records(path), None) is None:
        raise _no_rows(path, "the file is empty or blank")
    first = next((rec for _, rec in _jsonl_records(path) if isinstance(rec, dict)), {})
    fmap = resolve_field_map(field_map, first.keys(), path)

    def rows() -> Iterator[tuple[int, Any]]:
        for line, rec in _jsonl_records(path):
            if not isinstance(rec, (dict, BadRowError)):
                rec = BadRowError(path, line, f"a JSON object was expected, got {type(rec).__name__}")
            yield line, rec

    return fmap, rows()


def _check_columns(path: Path, fmap: FieldMap, columns: list[str]) -> None:
    missing = [name for name in fmap.required() if name not in columns]
    if missing:
        raise DataFileError(
            f"{path}: columns {missing} of the field map are missing (columns: {columns}); "
            "pass a field map that names this file's columns"
        )


def _read_csv(path: Path, field_map: FieldMapLike) -> tuple[FieldMap, Iterator[tuple[int, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh), [])
    if not header:
        raise _no_rows(path, "the file is empty, not even a header")
    fmap = resolve_field_map(field_map, header, path)
    _check_columns(path, fmap, header)

    def rows() -> Iterator[tuple[int, Any]]:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            next(reader)
            while True:
                start = reader.line_num + 1  # a quoted cell may span several physical lines
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    yield start, BadRowError(path, start, f"malformed CSV ({err})")
                    continue
                if not cells:
                    continue
                if len(cells) > len(header):
                    problem = f"{len(cells)} cells but the header has {len(header)}"
                    yield start, BadRowError(path, start, problem)
                    continue
                yield start, dict(zip(header, cells))

    return fmap, rows()


def _read_parquet(path: Path, field_map: FieldMapLike) -> tuple[FieldMap, Iterator[tuple[int, Any]]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    fmap = resolve_field_map(field_map, table.column_names, path)
    _check_columns(path, fmap, table.column_names)
    return fmap, enumerate(table.to_pylist(), start=1)


_READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}


def file_format(path: str | Path, format: str = "auto") -> str:
    """Resolves ``format="auto"`` from the file extension.

    Args:
        path: the data file.
        format: ``auto``, ``jsonl``, ``csv`` or ``parquet``.

    Returns:
        The concrete format.

    Raises:
        DataFileError: unknown format or extension.
    """
    if format not in FORMATS:
        raise DataFileError(f"unknown data format {format!r}; choose one of {list(FORMATS)}")
    if format != "auto":
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise DataFileError(f"{path}: cannot tell the format from the extension {suffix!r}; pass format=")
    return _EXTENSIONS[suffix]


def read_pairs(
    path: str | Path,
    format: str = "auto",
    field_map: FieldMapLike = None,
    skip_bad_rows: bool = False,
) -> ReadResult:
    """Reads a data file into validated polarity pairs.

    Args:
        path: a ``.jsonl``, ``.csv`` or ``.parquet`` file.
        format: ``auto`` (from the extension), ``jsonl``, ``csv`` or ``parquet``.
        field_map: a :class:`FieldMap`, a preset name, a partial mapping over the detected preset, or None
            to detect the preset from the columns (AxBench, Anthropic evals, question/matching/not_matching).
        skip_bad_rows: leave out unusable rows (listed in ``ReadResult.skipped``) instead of raising.

    Returns:
        The pairs in file order and the skipped rows.

    Raises:
        DataFileError: missing file, unknown format, missing columns, a file without rows, or (with
            ``skip_bad_rows``) a file none of whose rows is usable.
        BadRowError: an unusable row, when ``skip_bad_rows`` is False.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"data file not found: {path}")
    fmap, rows = _READERS[file_format(path, format)](path, field_map)
    result = ReadResult(pairs=[], source=str(path), field_map=fmap)
    for line, record in rows:
        try:
            if isinstance(record, BadRowError):
                raise record
            result.pairs.append(make_pair(record, fmap, str(path), line))
        except BadRowError as err:
            if not skip_bad_rows:
                raise
            result.skipped.append((line, err.problem))
    if not result.pairs and not result.skipped:
        raise _no_rows(path, "it has columns but no data rows")
    if not result.pairs:
        line, problem = result.skipped[0]
        raise DataFileError(
            f"{path}: none of its {len(result.skipped)} rows is usable, skip_bad_rows left out every one "
            f"(first: {location(path, line)}: {problem}); fix the file or check the field map"
        )
    return result
