"""The judge interface: chat prompts in, reply texts out, with an on-disk cache and counts of what happened.

A backend subclasses :class:`Judge` and implements :meth:`Judge.describe` (what it is) and :meth:`Judge._send`
(ask the model). :meth:`Judge.complete` validates the prompts, answers what it can from the cache, sends the rest
and stores each reply as it arrives, so an interrupted run keeps what it already paid for and a rerun sends
nothing. A prompt that gets no reply (every retry failed) comes back as ``None``: it is counted as a failure,
never cached and never scored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OptionError
from ..progress import ProgressLog
from .cache import JudgeCache

#: One chat conversation: ``[{"role": "user", "content": "..."}]`` (roles ``system``, ``user``, ``assistant``).
Messages = list[dict[str, str]]

ROLES = ("system", "user", "assistant")


class JudgeConfigError(OptionError):
    """The judge cannot work as configured (unknown model, rejected API key, missing chat template)."""


@dataclass
class JudgeCounts:
    """What a judge did.

    Attributes:
        calls: generations requested from the model (a retried request counts each time it is sent).
        cache_hits: prompts answered from the cache without a call.
        retries: requests sent again after an error or a timeout (included in ``calls``).
        failures: prompts left without a reply after every retry (not cached, not scored).
    """

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class JudgeRecord:
    """What a judge is, as a result records it.

    Attributes:
        kind: the backend (``"openai-compatible"``, ``"hf-in-process"``).
        model: the judge model's name.
        endpoint: the base URL of the server, or ``"in-process"``.
        settings: everything that decides the replies (temperature, top_p, seed, token limit, dtype); part of
            the cache key.
        options: how the calls are made (concurrency, timeout, retries, batch size); not part of the cache key.
    """

    kind: str
    model: str
    endpoint: str
    settings: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """The fields that decide a reply: kind, model, endpoint and settings."""
        return {"kind": self.kind, "model": self.model, "endpoint": self.endpoint, "settings": self.settings}

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)


def check_messages(conversations: Sequence[Messages]) -> None:
    """Raises ``ValueError`` naming the first conversation that is not a non-empty list of role/content dicts."""
    for i, messages in enumerate(conversations):
        ok = isinstance(messages, list) and len(messages) > 0
        for message in messages if ok else []:
            ok = ok and isinstance(message, dict) and set(message) == {"role", "content"}
            ok = ok and message.get("role") in ROLES and isinstance(message.get("content"), str)
        if not ok:
            raise ValueError(
                f"judge prompt {i} must be a non-empty list of {{'role', 'content'}} messages with a role in "
                f"{ROLES} and text content, got {messages!r:.200}"
            )


class Judge(ABC):
    """An LLM judge: a list of chat prompts in, one reply text (or ``None`` after a failure) per prompt out.

    Attributes:
        cache: the on-disk reply cache, or ``None`` (every prompt is sent).
        counts: running totals of calls, cache hits, retries and failures (take differences around a run).
        deterministic: ``True`` when the same prompt always gets the same reply (greedy in-process decoding);
            scorers then skip asking again after an unparseable reply.
    """

    deterministic: bool = False

    def __init__(self, cache: JudgeCache | str | Path | None = None) -> None:
        self.cache = JudgeCache(cache) if isinstance(cache, (str, Path)) else cache
        self.counts = JudgeCounts()

    @abstractmethod
    def describe(self) -> JudgeRecord:
        """The judge's model, endpoint kind, settings and call options."""

    @abstractmethod
    def _send(self, conversations: Sequence[Messages], attempt: int) -> Iterator[tuple[int, str | None]]:
        """Asks the model; yields ``(index into conversations, reply text or None)`` as each reply arrives.

        Updates ``self.counts.calls`` and ``self.counts.retries``; ``attempt`` > 0 asks again for a prompt whose
        earlier reply could not be used (a backend with a seed offsets it by ``attempt``).
        """

    def cache_key(self, messages: Messages, attempt: int = 0) -> str:
        """The cache key of a prompt: sha256 of the judge's identity, the exact messages and the attempt."""
        key = {"judge": self.describe().identity(), "messages": messages, "attempt": attempt}
        return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def complete(self, conversations: Sequence[Messages], *, attempt: int = 0) -> list[str | None]:
        """Replies to each conversation, from the cache where possible.

        Args:
            conversations: the prompts, each a list of chat messages.
            attempt: 0 for a first request; k > 0 asks again (its own cache entry, so a rerun replays the same
                sequence of replies).

        Returns:
            One reply text per conversation, ``None`` where every retry failed (counted in ``counts.failures``).
        """
        check_messages(conversations)
        replies: list[str | None] = [None] * len(conversations)
        keys = [self.cache_key(m, attempt) for m in conversations] if self.cache is not None else []
        missing = []
        for i in range(len(conversations)):
            cached = self.cache.get(keys[i]) if self.cache is not None else None
            if cached is None:
                missing.append(i)
            else:
                replies[i] = cached
                self.counts.cache_hits += 1
        if not missing:
            return replies
        record = self.describe()
        identity = record.identity()
        label = f"judge {record.model} replies" + (f" (attempt {attempt + 1})" if attempt else "")
        with ProgressLog(label, len(missing), unit="reply") as advance:
            for j, reply in self._send([conversations[i] for i in missing], attempt):
                i = missing[j]
                replies[i] = reply
                if reply is None:
                    self.counts.failures += 1
                elif self.cache is not None:
                    self.cache.put(keys[i], reply, identity)
                advance()
        return replies
