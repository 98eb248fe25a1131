"""A judge served over an OpenAI-compatible chat-completions API (OpenAI, vLLM, llama.cpp ``llama-server``, ...).

The endpoint and key come from the options, else from the environment: ``LIGHTNING_SPLIT_JUDGE_BASE_URL`` then
``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``), and ``LIGHTNING_SPLIT_JUDGE_API_KEY`` then
``OPENAI_API_KEY`` (a local server that checks no key needs none). Requests run in a bounded thread pool; each has
a timeout, and connection errors, timeouts, rate limits and server errors (5xx, 408, 409) are retried with
exponential back-off. A rejected key, a forbidden request or an unknown model stops the run with
:class:`~lightning_split.judges.base.JudgeConfigError`; any other rejected request is a counted failure.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import openai

from ..errors import OptionError
from .base import Judge, JudgeConfigError, JudgeRecord, Messages
from .cache import JudgeCache

log = logging.getLogger(__name__)

BASE_URL_ENV = ("LIGHTNING_SPLIT_JUDGE_BASE_URL", "OPENAI_BASE_URL")
API_KEY_ENV = ("LIGHTNING_SPLIT_JUDGE_API_KEY", "OPENAI_API_KEY")
OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Sent as the key to a server that needs none (the client refuses an empty key).
NO_KEY = "no-key"

_RETRYABLE = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError, openai.ConflictError)
_CONFIG = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)


def _from_env(names: Sequence[str]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


class OpenAIJudge(Judge):
    """A judge model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: the model name the server knows (``"gpt-4.1-mini"``; any name for a one-model ``llama-server``).
        base_url: the API root (``http://127.0.0.1:8080/v1``); default from the environment (module docstring).
        api_key: the key; default from the environment. Required for ``api.openai.com``.
        temperature: sampling temperature (0 for the BiPO protocol; AxBench used 0.7).
        top_p: nucleus sampling (``None``: the server's default).
        seed: sampling seed sent with each request (``None``: none); a repeated request after an unparseable
            reply sends ``seed + attempt``.
        max_tokens: most tokens per reply.
        concurrency: requests in flight at once.
        timeout_s: seconds one request may take before it is abandoned (and retried).
        max_retries: retries of a request after a retryable error (so at most ``1 + max_retries`` sends).
        backoff_s: wait before the first retry; doubled before each later one, at most ``max_backoff_s``.
        max_backoff_s: the longest wait between retries.
        cache: the reply cache (a :class:`JudgeCache` or its path), or ``None``.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        top_p: float | None = None,
        seed: int | None = None,
        max_tokens: int = 256,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        cache: JudgeCache | str | Path | None = None,
    ) -> None:
        checks = {
            "model": bool(model),
            "temperature": temperature >= 0,
            "top_p": top_p is None or 0 <= top_p <= 1,
            "max_tokens": max_tokens >= 1,
            "concurrency": concurrency >= 1,
            "timeout_s": timeout_s > 0,
            "max_retries": max_retries >= 0,
            "backoff_s": backoff_s >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise OptionError(
                f"OpenAIJudge: bad {', '.join(bad)} (model non-empty, temperature >= 0, 0 <= top_p <= 1, "
                f"max_tokens >= 1, concurrency >= 1, timeout_s > 0, max_retries >= 0, backoff_s >= 0)"
            )
        super().__init__(cache)
        self.model = model
        self.base_url = (base_url or _from_env(BASE_URL_ENV) or OPENAI_BASE_URL).rstrip("/")
        key = api_key or _from_env(API_KEY_ENV)
        if key is None and self.base_url == OPENAI_BASE_URL:
            raise OptionError(
                f"the judge endpoint {OPENAI_BASE_URL} needs an API key: set {' or '.join(API_KEY_ENV)} or pass "
                "api_key (or point base_url at another OpenAI-compatible server)"
            )
        self.temperature, self.top_p, self.seed, self.max_tokens = temperature, top_p, seed, max_tokens
        self.concurrency, self.timeout_s, self.max_retries = concurrency, timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key or NO_KEY, timeout=timeout_s, max_retries=0)
        self._lock = threading.Lock()

    def describe(self) -> JudgeRecord:
        """Model, base URL, sampling settings and call options (never the key)."""
        return JudgeRecord(
            kind="openai-compatible",
            model=self.model,
            endpoint=self.base_url,
            settings={
                "temperature": self.temperature,
                "top_p": self.top_p,
                "seed": self.seed,
                "max_tokens": self.max_tokens,
            },
            options={
                "concurrency": self.concurrency,
                "timeout_s": self.timeout_s,
                "max_retries": self.max_retries,
                "backoff_s": self.backoff_s,
                "max_backoff_s": self.max_backoff_s,
            },
        )

    def _request(self, messages: Messages, attempt: int) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.top_p is not None:
            request["top_p"] = self.top_p
        if self.seed is not None:
            request["seed"] = self.seed + attempt
        return request

    def _ask(self, messages: Messages, attempt: int) -> str | None:
        """One prompt, retried with back-off; ``None`` when every try failed or the request was rejected."""
        request = self._request(messages, attempt)
        tried = 0
        while True:
            with self._lock:
                self.counts.calls += 1
                self.counts.retries += int(tried > 0)
            try:
                response = self._client.chat.completions.create(**request)
                return (response.choices[0].message.content or "") if response.choices else ""
            except _CONFIG as err:
                raise JudgeConfigError(
                    f"judge endpoint {self.base_url} refused model {self.model!r} ({type(err).__name__}: {err}): "
                    "check the model name, base_url and API key"
                ) from err
            except openai.APIError as err:
                retryable = isinstance(err, _RETRYABLE) or getattr(err, "status_code", None) == 408
                if not retryable or tried == self.max_retries:
                    log.warning("judge request failed after %d tries: %s: %s", tried + 1, type(err).__name__, err)
                    return None
            time.sleep(min(self.backoff_s * 2**tried, self.max_backoff_s))
            tried += 1

    def _send(self, conversations: Sequence[Messages], attempt: int) -> Iterator[tuple[int, str | None]]:
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge")
        try:
            futures = {pool.submit(self._ask, messages, attempt): i for i, messages in enumerate(conversations)}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
