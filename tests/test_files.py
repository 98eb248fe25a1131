"""write_text_atomic and staged_output: the whole new output or the old one, never a half-written one, and no
temporary file or folder left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightning_split.files import staged_output, write_text_atomic


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


def _folder(path: Path, **files: str) -> None:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)


def _contents(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir())}


def test_staged_folder_replaces_the_old_one_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "out"
    _folder(target, old="1", stale="2")
    with staged_output(target) as staged:
        assert staged.name == "out" and staged.parent.parent == tmp_path and not staged.exists()
        _folder(staged, new="3")
    assert _contents(target) == {"new": "3"} and os.listdir(tmp_path) == ["out"]


def test_staged_output_creates_the_parent_and_replaces_a_file_with_a_folder(tmp_path: Path) -> None:
    with staged_output(tmp_path / "a" / "b") as staged:
        staged.write_text("file")
    assert (tmp_path / "a" / "b").read_text() == "file" and os.listdir(tmp_path / "a") == ["b"]
    with staged_output(tmp_path / "a" / "b") as staged:
        _folder(staged, x="folder")
    assert _contents(tmp_path / "a" / "b") == {"x": "folder"} and os.listdir(tmp_path / "a") == ["b"]


def test_a_failure_while_writing_keeps_the_old_folder_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    _folder(target, old="1")
    with pytest.raises(OSError, match="disk full"), staged_output(target) as staged:
        _folder(staged, half="written")
        raise OSError("disk full")
    assert _contents(target) == {"old": "1"} and os.listdir(tmp_path) == ["out"]


def test_a_failed_move_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out"
    _folder(target, old="1")
    real_replace = os.replace
    moves: list[tuple[str, str]] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        moves.append((Path(src).name, Path(dst).name))
        if (Path(src).name, Path(dst)) == ("out", target):  # moving the new folder into place
            raise OSError("interrupted")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="interrupted"), staged_output(target) as staged:
        _folder(staged, new="2")
    assert moves == [("out", "out.old"), ("out", "out"), ("out.old", "out")]
    assert _contents(target) == {"old": "1"} and os.listdir(tmp_path) == ["out"]


def test_writing_nothing_is_an_error_that_keeps_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.gguf"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="nothing was written at .*out.gguf"), staged_output(target):
        pass
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.gguf"]
