"""Writing a file or folder so that a reader, or a run killed half-way, never sees it half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


def fresh_folder(path: str | os.PathLike[str]) -> Path:
    """Creates and returns ``path``, or ``path-2``, ``path-3``… the first of them that does not exist yet (an
    earlier stage's records there are never overwritten)."""
    path = Path(path)
    candidate, n = path, 2
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}-{n}"), n + 1
    candidate.mkdir(parents=True)
    return candidate


@contextmanager
def staged_output(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a path to write a file or folder at; when the body succeeds, what it wrote takes ``target``'s place.

    The yielded path has ``target``'s name, inside a fresh hidden folder beside ``target`` (its parent is created),
    so the move is on the same file system. If the body raises, ``target`` is not touched. A file replaces a file
    in one step; a folder (or a file where a folder was, or the reverse) cannot, so the old ``target`` is first
    moved aside into the hidden folder and put back if moving the new one in fails: ``target`` is at every moment
    either whole and old or whole and new. The hidden folder, with the old ``target``, is removed in every case.

    Example::

        with staged_output(directory) as staged:
            staged.mkdir()
            (staged / "a.json").write_text("{}")

    Raises:
        RuntimeError: the body wrote nothing at the yielded path (``target`` is kept).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staged = scratch / target.name
    try:
        yield staged
        if not staged.exists():
            raise RuntimeError(f"nothing was written at {staged}, so {target} was left as it was")
        old = None
        if target.exists() and (target.is_dir() or staged.is_dir()):
            old = scratch / f"{target.name}.old"
            os.replace(target, old)
        try:
            os.replace(staged, target)
        except OSError:
            if old is not None:
                os.replace(old, target)
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
