"""Writing a file so that a reader, or a run killed half-way, never sees it half-written."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Writes ``text`` (UTF-8) to a temporary file beside ``path``, then moves it to ``path`` in one step.

    The parent folder is created; the file gets ordinary permissions (the umask's, not ``mkstemp``'s 0600); the
    temporary file is removed if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
