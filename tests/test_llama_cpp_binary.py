"""Finding ``llama-server`` for the interop tests: the env var, then the build script's cache, else a clear failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.llama_server import BINARY_ENV, cached_binary, llama_server_binary


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_env_var_then_cache_then_a_message_to_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTNING_SPLIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(BINARY_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"run `make llama-server`.*do not skip"):
        llama_server_binary()
    cached = _executable(cached_binary())
    assert cached == tmp_path / "cache" / "llama-server" / "0.3.36" / "bin" / "llama-server"
    assert llama_server_binary() == cached
    named = _executable(tmp_path / "elsewhere" / "llama-server")
    monkeypatch.setenv(BINARY_ENV, str(named))
    assert llama_server_binary() == named
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=rf"\${BINARY_ENV}=.*missing: run `make llama-server`"):
        llama_server_binary()


def test_build_script_and_helper_agree_on_the_version() -> None:
    script = (Path(__file__).resolve().parents[1] / "scripts" / "build_llama_server.sh").read_text()
    assert 'version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"' in script and "0.3.36" in str(cached_binary())
