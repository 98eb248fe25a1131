"""One reply as it is decoded token by token: its text, what may be streamed yet, and why it ended.

The text is always the decoding of every generated token up to the end of the turn, special tokens removed —
the text :func:`lightning_split.generation.generate_steered` returns for the same tokens — cut before the first
``stop`` string. While the reply runs, the streamable text holds back a trailing partial character and any end
that could still become a stop string, so the streamed pieces always add up to the final text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class Reply:
    """The decoding state of one row of a batch.

    Args:
        decode: the text of token ids, special tokens removed.
        stop_ids: token ids that end the turn (not part of the text).
        stop_strings: strings that end the reply (OpenAI's ``stop``; cut off, not part of the text).
        max_tokens: most tokens the reply may have.
        stream: whether pieces are streamed; a reply neither streamed nor watched for stop strings is decoded
            once, when it ends.
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        stop_ids: Sequence[int],
        stop_strings: Sequence[str],
        max_tokens: int,
        stream: bool,
    ) -> None:
        self.decode = decode
        self.stop_ids = frozenset(stop_ids)
        self.stop_strings = list(stop_strings)
        self.max_tokens = max_tokens
        self.live = stream or bool(self.stop_strings)
        self.tokens: list[int] = []
        self.text = ""
        self.steps = 0
        self.finish_reason: str | None = None
        self._sent = 0

    @property
    def finished(self) -> bool:
        """Whether the reply has ended."""
        return self.finish_reason is not None

    def add(self, token: int) -> str:
        """Takes the next generated token; returns the text that may be streamed now (possibly empty).

        Ignored once the reply has finished (the batch pads finished rows).
        """
        if self.finished:
            return ""
        self.steps += 1
        if token in self.stop_ids:
            return self.finish("stop")
        self.tokens.append(token)
        if self.live:
            self.text = self.decode(self.tokens)
            cuts = [i for i in (self.text.find(s) for s in self.stop_strings) if i >= 0]
            if cuts:
                self.text = self.text[: min(cuts)]
                return self.finish("stop")
        if len(self.tokens) >= self.max_tokens:
            return self.finish("length")
        return self._take(self._streamable_end()) if self.live else ""

    def finish(self, reason: str) -> str:
        """Ends the reply (``stop``: end of turn or a stop string; ``length``: ``max_tokens``); returns the rest."""
        if self.finished:
            return ""
        self.finish_reason = reason
        if not self.live:
            self.text = self.decode(self.tokens)
        return self._take(len(self.text))

    def _streamable_end(self) -> int:
        """How much of the text can no longer change: without a trailing partial character (decoded as U+FFFD)
        and without an end that begins a stop string."""
        end = len(self.text.rstrip("\ufffd"))
        kept = self.text[:end]
        held = max((k for s in self.stop_strings for k in range(1, len(s)) if kept.endswith(s[:k])), default=0)
        return end - held

    def _take(self, end: int) -> str:
        piece = self.text[self._sent : end] if end > self._sent else ""
        self._sent = max(self._sent, end)
        return piece
