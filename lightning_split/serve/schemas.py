"""Request and response bodies of the OpenAI-compatible chat-completions endpoint.

The request is OpenAI's ``POST /v1/chat/completions`` body plus two fields that choose the steering
(EasySteer-like): ``control`` (the name of a served control) and ``multiplier`` (its strength ``m``; 0 is the
unsteered backbone). Unknown fields are refused, so a misspelt ``multiplier`` cannot silently fall back to the
default. Fields of the OpenAI API this server cannot honour (``n > 1``, ``top_p < 1``, penalties, tools,
logprobs) are refused with a message rather than ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP_STRINGS = 4
"""OpenAI's limit on ``stop`` strings per request."""


class TextPart(BaseModel):
    """One text part of a message's content (``{"type": "text", "text": ...}``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat turn. ``developer`` is OpenAI's newer name for ``system`` and is read as ``system``."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        """The message's text (text parts joined)."""
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)

    def template_role(self) -> str:
        """The role as chat templates know it."""
        return "system" if self.role == "developer" else self.role


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``: ``include_usage`` adds a last chunk holding the token counts."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``.

    ``control``/``multiplier`` left out take the server's defaults (``--default-control``,
    ``--default-multiplier``); ``max_tokens`` and ``temperature`` left out take ``--max-tokens`` and
    ``--temperature``. ``temperature`` 0 decodes greedily; above 0 it samples (with ``seed``, reproducibly).
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    control: str | None = None
    multiplier: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    user: str | None = None

    @field_validator("top_p")
    @classmethod
    def _full_nucleus(cls, value: float | None) -> float | None:
        if value is not None and value != 1.0:
            raise ValueError("top_p other than 1 is not supported (sampling uses temperature only)")
        return value

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("n must be 1 (send one request per reply; the server batches them)")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: str | list[str] | None) -> str | list[str] | None:
        strings = [value] if isinstance(value, str) else value or []
        if len(strings) > MAX_STOP_STRINGS or any(not s for s in strings):
            raise ValueError(f"stop takes at most {MAX_STOP_STRINGS} non-empty strings")
        return value

    @model_validator(mode="after")
    def _one_token_limit(self) -> ChatRequest:
        if None not in (self.max_tokens, self.max_completion_tokens) and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens disagree: send one of them")
        return self

    def stop_strings(self) -> list[str]:
        """``stop`` as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def token_limit(self) -> int | None:
        """``max_completion_tokens`` or ``max_tokens`` (``None``: the server's default)."""
        return self.max_completion_tokens or self.max_tokens


class ApiError(Exception):
    """A request the server refuses; rendered as OpenAI's error JSON with ``status``.

    Args:
        status: the HTTP status (400 bad request, 404 unknown model or control, 429 queue full...).
        message: what is wrong and what to do.
        param: the request field at fault, if any.
        code: a short machine-readable code (``control_not_found``, ``queue_full``...).
    """

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}`` as the OpenAI API writes it."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        if self.status == 429:
            kind = "rate_limit_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def completion_id() -> str:
    """A fresh ``chatcmpl-…`` id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _envelope(cid: str, model: str, obj: str, control: str, multiplier: float) -> dict[str, Any]:
    """The fields every response and chunk share; ``control`` and ``multiplier`` echo the steering used."""
    return {"id": cid, "object": obj, "created": int(time.time()), "model": model, "control": control,
            "multiplier": multiplier}  # fmt: skip


def completion_body(
    cid: str, model: str, control: str, multiplier: float, text: str, finish_reason: str, token_usage: dict[str, int]
) -> dict[str, Any]:
    """A whole ``chat.completion`` response."""
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
    return {**_envelope(cid, model, "chat.completion", control, multiplier), "choices": [choice], "usage": token_usage}


def chunk_body(
    cid: str,
    model: str,
    control: str,
    multiplier: float,
    delta: dict[str, str],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a streamed reply."""
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {**_envelope(cid, model, "chat.completion.chunk", control, multiplier), "choices": [choice]}


def usage_chunk_body(cid: str, model: str, control: str, multiplier: float, token_usage: dict[str, int]) -> dict:
    """The last chunk asked for by ``stream_options.include_usage``: no choices, the token counts."""
    return {**_envelope(cid, model, "chat.completion.chunk", control, multiplier), "choices": [], "usage": token_usage}
