"""A real ``llama-server`` (llama.cpp) for tests: start it on a free localhost port, wait for ``/health``, stop it.

The binary is built by ``make llama-server`` (``scripts/build_llama_server.sh``, cached under
``~/.cache/lightning_split/llama-server/<version>``); ``make test`` passes its path in
``$LIGHTNING_SPLIT_LLAMA_SERVER``. :func:`llama_server_binary` refuses to run without it instead of skipping,
so CI never passes interop tests silently.

Example::

    with llama_server(gguf_model, control_vectors=[(vector_file, 2.0)]) as server:
        reply = server.post("/completion", {"prompt": [1, 2, 3], "n_predict": 1, "n_probs": 10})
        chat_url = server.chat_completions_url  # an OpenAI-compatible endpoint: f"{server.base_url}/v1/..."
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BINARY_ENV = "LIGHTNING_SPLIT_LLAMA_SERVER"
"""Environment variable with the ``llama-server`` path (set by ``make test``)."""

VERSION = "0.3.36"
"""The ``llama-cpp-python`` sdist whose vendored llama.cpp ``scripts/build_llama_server.sh`` builds by default."""


def cached_binary() -> Path:
    """Where ``scripts/build_llama_server.sh`` puts the binary (``$LIGHTNING_SPLIT_CACHE`` or the home cache)."""
    root = Path(os.environ.get("LIGHTNING_SPLIT_CACHE") or Path.home() / ".cache" / "lightning_split")
    return root / "llama-server" / VERSION / "bin" / "llama-server"


def llama_server_binary() -> Path:
    """The ``llama-server`` to test against: ``$LIGHTNING_SPLIT_LLAMA_SERVER``, else the build script's cache.

    Raises:
        FileNotFoundError: neither exists; the message says to run ``make llama-server``.
    """
    named = os.environ.get(BINARY_ENV)
    candidates = [Path(named)] if named else [cached_binary()]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    where = f"${BINARY_ENV}={named}" if named else f"{cached_binary()} (and ${BINARY_ENV} is not set)"
    raise FileNotFoundError(
        f"llama-server not found at {where}: run `make llama-server` (about 10 min once, then cached) or set "
        f"{BINARY_ENV} to a llama-server binary; the llama.cpp interop tests do not skip"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LlamaServer:
    """A running ``llama-server``.

    Attributes:
        base_url: ``http://127.0.0.1:<port>``.
        process: the server process.
        log: the file holding its output.
    """

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def chat_completions_url(self) -> str:
        """The OpenAI-compatible chat endpoint, ``<base_url>/v1/chat/completions``."""
        return f"{self.base_url}/v1/chat/completions"

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` an OpenAI client takes, ``<base_url>/v1``."""
        return f"{self.base_url}/v1"

    def post(self, path: str, body: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """POSTs ``body`` as JSON to ``path`` (e.g. ``/completion``) and returns the JSON reply."""
        request = urllib.request.Request(
            f"{self.base_url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read())

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's output."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _wait_healthy(server: LlamaServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or 503 while the model loads
        time.sleep(0.2)
    raise TimeoutError(f"llama-server not healthy after {timeout:.0f} s:\n{server.log_tail()}")


@contextmanager
def llama_server(
    model: str | Path,
    control_vectors: Sequence[tuple[str | Path, float]] = (),
    extra_args: Sequence[str] = (),
    context_size: int = 2048,
    threads: int = 2,
    startup_timeout: float = 120.0,
) -> Iterator[LlamaServer]:
    """Runs ``llama-server`` with ``model`` on a free 127.0.0.1 port for the duration of the context.

    Args:
        model: a GGUF model file.
        control_vectors: ``(file, scale)`` pairs, passed as ``--control-vector-scaled FILE:SCALE`` (summed).
        extra_args: more command-line arguments (e.g. ``["--lora-scaled", "a.gguf:1"]``).
        context_size: ``--ctx-size``.
        threads: ``--threads``.
        startup_timeout: seconds to wait for ``/health``.

    Yields:
        The running server; it is stopped (terminated, then killed after 10 s) when the context exits.

    Raises:
        FileNotFoundError: no ``llama-server`` binary (:func:`llama_server_binary`).
        RuntimeError / TimeoutError: the server exited or did not become healthy (the message has its log).
    """
    binary = llama_server_binary()
    for path, _ in control_vectors:
        if ":" in str(path):
            raise ValueError(f"{path}: llama-server splits --control-vector-scaled on ':'; use a path without one")
    port = free_port()
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "--ctx-size",
               str(context_size), "--threads", str(threads), "--parallel", "1", "--no-webui"]  # fmt: skip
    for path, scale in control_vectors:
        command += ["--control-vector-scaled", f"{path}:{scale}"]
    command += list(extra_args)
    with tempfile.TemporaryDirectory(prefix="llama-server-") as scratch:
        log = Path(scratch) / "server.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = LlamaServer(f"http://127.0.0.1:{port}", process, log)
        try:
            _wait_healthy(server, startup_timeout)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
