"""The FastAPI application: ``POST /v1/chat/completions`` (plain or streamed), ``GET /v1/models``, ``GET /health``.

A request names the backbone (or a control) as ``model`` and chooses the steering with ``control`` and
``multiplier``; its reply comes from a batch decoded by the :class:`~lightning_split.serve.batching.BatchWorker`.
Every refusal is OpenAI's error JSON (``{"error": {"message", "type", "param", "code"}}``) with a 4xx status.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from .batching import BatchWorker, Delta, Failed, Finished, Job
from .reply import Reply
from .schemas import (
    ApiError,
    ChatRequest,
    chunk_body,
    completion_body,
    completion_id,
    usage,
    usage_chunk_body,
)
from .served import ServedModel


@dataclass(frozen=True)
class ServeSettings:
    """What a request gets when it leaves a field out, the limits, and the batching.

    Args:
        default_control: the control of a request without ``control`` (``None``: the first served control).
        default_multiplier: the multiplier of a request without ``multiplier``.
        max_multiplier: the largest ``|multiplier|`` accepted.
        max_tokens: ``max_tokens`` of a request without it.
        temperature: ``temperature`` of a request without it (0: greedy).
        max_batch_size: most requests decoded in one batch.
        max_queue: most requests waiting for a batch (429 beyond).
        batch_wait_s: how long the oldest waiting request waits for others to fill its batch.
    """

    default_control: str | None = None
    default_multiplier: float = 1.0
    max_multiplier: float = 100.0
    max_tokens: int = 128
    temperature: float = 0.0
    max_batch_size: int = 8
    max_queue: int = 64
    batch_wait_s: float = 0.01


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """One readable line per problem of the body, and the first field at fault."""
    lines, params = [], []
    for problem in err.errors():
        loc = [str(p) for p in problem.get("loc", ()) if p != "body"]
        field = ".".join(loc)
        if problem.get("type") == "json_invalid":
            return f"the body is not valid JSON ({problem.get('ctx', {}).get('error', 'decode error')})", None
        if problem.get("type") == "extra_forbidden":
            lines.append(f"unsupported field {field!r} (a misspelt control or multiplier?); this server reads "
                         f"{', '.join(ChatRequest.model_fields)}")  # fmt: skip
        else:
            lines.append(f"{field or 'body'}: {problem.get('msg')}")
        params.append(field or None)
    return "; ".join(lines) or "invalid request body", next(iter(params), None)


class ChatEndpoint:
    """Turns a :class:`ChatRequest` into a queued :class:`Job` and its events into OpenAI responses."""

    def __init__(self, served: ServedModel, settings: ServeSettings, worker: BatchWorker) -> None:
        self.served = served
        self.settings = settings
        self.worker = worker
        self.default_control = settings.default_control or next(iter(served.controls))

    def job(self, request: ChatRequest) -> Job:
        """Checks the request and builds its job.

        Raises:
            ApiError: unknown model or control (404), a bad multiplier, messages or length (400).
        """
        served, settings = self.served, self.settings
        if request.model == served.name:
            name = request.control or self.default_control
        elif request.model in served.controls:
            if request.control not in (None, request.model):
                raise ApiError(400, f"model {request.model!r} is a control but control is {request.control!r}: "
                               f"send model {served.name!r} with the control, or only the control as model",
                               param="control")  # fmt: skip
            name = request.model
        else:
            raise ApiError(404, f"unknown model {request.model!r}; this server serves {served.name!r} and its "
                           f"controls {sorted(served.controls)} (GET /v1/models)",
                           "model", "model_not_found")  # fmt: skip
        if name not in served.controls:
            raise ApiError(404, f"unknown control {name!r}; this server has {sorted(served.controls)} "
                           "(GET /v1/models lists them)", "control", "control_not_found")  # fmt: skip
        m = settings.default_multiplier if request.multiplier is None else request.multiplier
        if not math.isfinite(m) or abs(m) > settings.max_multiplier:
            raise ApiError(400, f"multiplier must be a finite number with |multiplier| <= {settings.max_multiplier:g} "
                           f"(--max-multiplier), got {m!r}", "multiplier", "invalid_multiplier")  # fmt: skip
        prompt = served.prompt_ids(request.messages)
        max_tokens = request.token_limit() or settings.max_tokens
        if served.context is not None and len(prompt) + max_tokens > served.context:
            raise ApiError(400, f"the prompt's {len(prompt)} tokens plus max_tokens {max_tokens} exceed the "
                           f"backbone's context of {served.context} tokens; shorten the messages or lower max_tokens",
                           "max_tokens", "context_length_exceeded")  # fmt: skip
        reply = Reply(served.decode, served.stop_ids, request.stop_strings(), max_tokens, request.stream)
        temperature = settings.temperature if request.temperature is None else request.temperature
        return Job(
            served.controls[name], float(m), prompt, reply, temperature, request.seed, asyncio.get_running_loop()
        )

    async def complete(self, request: ChatRequest) -> JSONResponse:
        """The whole reply as one ``chat.completion``."""
        job = self.job(request)
        self.worker.submit(job)
        try:
            while not isinstance(event := await job.events.get(), (Finished, Failed)):
                pass
        finally:
            job.cancelled = True  # a client gone before the end frees its row
        if isinstance(event, Failed):
            raise ApiError(500, event.message, code="generation_failed")
        tokens = usage(len(job.prompt_ids), event.completion_tokens)
        body = completion_body(completion_id(), request.model, job.control.name, job.multiplier, job.reply.text,
                               event.reason, tokens)  # fmt: skip
        return JSONResponse(body)

    def stream(self, request: ChatRequest) -> StreamingResponse:
        """The reply as server-sent ``chat.completion.chunk`` events ending with ``data: [DONE]``."""
        job = self.job(request)
        self.worker.submit(job)
        cid = completion_id()
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        def sse(body: dict[str, Any]) -> str:
            return f"data: {json.dumps(body)}\n\n"

        async def chunks() -> AsyncIterator[str]:
            head = (cid, request.model, job.control.name, job.multiplier)
            try:
                yield sse(chunk_body(*head, {"role": "assistant", "content": ""}))
                while True:
                    event = await job.events.get()
                    if isinstance(event, Delta):
                        yield sse(chunk_body(*head, {"content": event.text}))
                    elif isinstance(event, Finished):
                        yield sse(chunk_body(*head, {}, event.reason))
                        if include_usage:
                            yield sse(usage_chunk_body(*head, usage(len(job.prompt_ids), event.completion_tokens)))
                        break
                    else:
                        yield sse(ApiError(500, event.message, code="generation_failed").body())
                        break
                yield "data: [DONE]\n\n"
            finally:
                job.cancelled = True

        return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def create_app(served: ServedModel, settings: ServeSettings) -> FastAPI:
    """The application serving ``served`` with ``settings``; its lifespan starts and stops the batch worker.

    Raises:
        ValueError: ``settings.default_control`` is not a served control, or a limit is not positive.
    """
    if settings.default_control is not None and settings.default_control not in served.controls:
        raise ValueError(f"--default-control {settings.default_control!r} is not a served control "
                         f"({sorted(served.controls)})")  # fmt: skip
    for option in ("max_batch_size", "max_queue", "max_tokens"):
        if getattr(settings, option) < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be at least 1, got {getattr(settings, option)}")
    worker = BatchWorker(served, settings.max_batch_size, settings.max_queue, settings.batch_wait_s)
    endpoint = ChatEndpoint(served, settings, worker)
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.close)

    app = FastAPI(title="lightning-split serve", lifespan=lifespan)
    app.state.worker = worker

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return JSONResponse(ApiError(400, message, param, "invalid_request").body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        message = f"{err.detail}: {request.method} {request.url.path}"
        return JSONResponse(ApiError(err.status_code, message).body(), status_code=err.status_code)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "backbone": served.name, "controls": list(served.controls), **worker.stats()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        backbone = {"id": served.name, "object": "model", "created": started, "owned_by": "lightning-split"}
        cards = [control.card(served.name, started) for control in served.controls.values()]
        return {"object": "list", "data": [backbone, *cards]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: ChatRequest) -> JSONResponse | StreamingResponse:
        return endpoint.stream(request) if request.stream else await endpoint.complete(request)

    return app
