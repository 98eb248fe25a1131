"""write_text_atomic: the whole text or the old file, never a half-written one, and no temporary file left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightning_split.files import write_text_atomic


def test_writes_the_text_into_a_new_folder_with_ordinary_permissions(tmp_path: Path) -> None:
    target = tmp_path / "new" / "out.jsonl"
    write_text_atomic(target, "ä\n")
    assert target.read_text(encoding="utf-8") == "ä\n" and os.listdir(target.parent) == ["out.jsonl"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "\ud800")  # a lone surrogate cannot be encoded as UTF-8
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]
