"""Polarity pairs and the errors raised for rows that cannot be used."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SKIP_HINT = "fix or remove the row, or set `skip_bad_rows: true` to drop such rows and report the count"


def location(source: str | Path, line: int) -> str:
    """Formats where a row is, as a user finds it: ``"file.csv, line 7"`` or ``"file.parquet, row 7"``.

    Text formats (JSONL, CSV) count physical lines, the CSV header being line 1. Parquet has no lines, so
    its rows are counted from 1.

    Args:
        source: the file the row came from.
        line: the 1-based line (text files) or row (parquet) number.

    Returns:
        The location string.
    """
    unit = "row" if str(source).endswith(".parquet") else "line"
    return f"{source}, {unit} {line}"


class BadRowError(ValueError):
    """A row of a data file that cannot be used as a polarity pair.

    The message names the file, the line (or parquet row), the problem and what to do about it.

    Attributes:
        source: the file.
        line: the 1-based line (or parquet row) number.
        problem: what is wrong with the row.
    """

    def __init__(self, source: str | Path, line: int, problem: str) -> None:
        self.source = str(source)
        self.line = line
        self.problem = problem
        super().__init__(f"{location(source, line)}: {problem}; {SKIP_HINT}.")


class DataFileError(ValueError):
    """A data file (not a single row) cannot be read: missing file, unknown format, missing columns."""


@dataclass
class PolarityPair:
    """A query with a concept-positive and a concept-negative completion.

    Completions are stored stripped of leading and trailing whitespace (the Anthropic evals' ``" Yes"``
    becomes ``"Yes"``): the chat template's assistant turn starts on a fresh line, so a leading space
    would only add an unusual token.

    Attributes:
        question: the user query ``q``.
        matching: the concept-positive completion ``A_p``.
        not_matching: the concept-negative completion ``A_n``.
        metadata: the row's other fields (for example ``statement``, ``label_confidence``, ``split``).
        source: the file the row was read from.
        line: the 1-based line (text files, header = line 1 for CSV) or row (parquet) number.
        group: the value of the field map's group field (AxBench ``concept_id``), as a string, if any.
    """

    question: str
    matching: str
    not_matching: str
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    line: int = 0
    group: str | None = None

    @property
    def where(self) -> str:
        """The row's location for messages, e.g. ``"data/x.csv, line 12"``."""
        return location(self.source, self.line)

    def bad(self, problem: str) -> BadRowError:
        """Builds the :class:`BadRowError` for this row.

        Args:
            problem: what is wrong with the row.

        Returns:
            The error (not raised).
        """
        return BadRowError(self.source, self.line, problem)
