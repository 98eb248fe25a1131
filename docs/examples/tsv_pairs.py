"""Example data reader for docs/extending.md: turn a tab-separated file into the JSONL the readers take.

The readers (``lightning_split/data/readers.py``) read JSONL, CSV and parquet through a field map, so data in
one of those formats with other column names needs no code (``data.question_field`` and friends). Another
format is converted once, as here, or given a reader inside ``readers.py`` (there is no reader registry yet).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path


def tsv_to_jsonl(source: str | Path, target: str | Path, question: str, good: str, bad: str) -> int:
    """Writes one ``{question, matching, not_matching}`` JSON line per row of ``source``; returns the count.

    Args:
        source: a tab-separated file with a header row.
        target: the JSONL file to write.
        question: column of the user query.
        good: column of the concept-positive completion.
        bad: column of the concept-negative completion.

    Raises:
        ValueError: a named column is missing from the header (names the file and the columns it has).
    """
    with Path(source).open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    columns = set(rows[0]) if rows else set()
    missing = [name for name in (question, good, bad) if name not in columns]
    if missing:
        raise ValueError(f"{source}: no column {missing}; the header has {sorted(columns)}")
    with Path(target).open("w") as out:
        for row in rows:
            record = {"question": row[question], "matching": row[good], "not_matching": row[bad]}
            out.write(json.dumps(record) + "\n")
    return len(rows)
