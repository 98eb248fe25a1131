"""On-disk cache of judge replies: one SQLite file, one row per (judge identity, exact prompt, attempt).

Each reply is committed as soon as it arrives (an interrupted run keeps what it got); SQLite's write-ahead log lets
several processes share one file. Only replies are stored: a failed call leaves no row.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..errors import OptionError

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS replies "
    "(key TEXT PRIMARY KEY, reply TEXT NOT NULL, judge TEXT NOT NULL, created REAL NOT NULL)"
)


class JudgeCache:
    """A SQLite file mapping cache keys (see :meth:`Judge.cache_key`) to reply texts.

    Args:
        path: the file (created with its folder if missing).

    Raises:
        OptionError: ``path`` exists but is not a judge cache.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise OptionError(
                f"judge cache {self.path} is not a judge cache ({err}): pass another cache path or delete the file"
            ) from err

    def get(self, key: str) -> str | None:
        """The stored reply for ``key``, or ``None``."""
        row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, reply: str, judge: dict[str, Any]) -> None:
        """Stores and commits one reply (``judge`` is the judge's identity, kept for inspection)."""
        self._db.execute(
            "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)", (key, reply, json.dumps(judge), time.time())
        )
        self._db.commit()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        """Closes the file."""
        self._db.close()
