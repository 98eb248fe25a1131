"""A bounded request queue and the worker thread that decodes waiting requests in batches.

Batching rule: the oldest waiting request chooses the batch; every waiting request with the same *batch key*
joins it, oldest first, up to ``max_batch_size``. The key is the control and the decoding: greedy requests
(temperature 0) of one control batch together whatever their multipliers, ``max_tokens`` and ``stop``; sampled
requests batch with those of the same control and temperature; a sampled request with a ``seed`` runs alone, so
that its seed alone decides its reply. One batch is one :func:`~lightning_split.generation.generate_steered`
call, one multiplier per row. Requests for other controls wait for a later batch (a batch steers with one
control). A batch starts when it is full or when its oldest request has waited ``batch_wait_s``.

The queue holds at most ``max_queue`` waiting requests (a running batch does not count); one more is refused
with 429 rather than left to wait without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria

from ..artifacts import trained_positions
from ..generation import generate_steered
from .reply import Reply
from .schemas import ApiError
from .served import ServedControl, ServedModel

log = logging.getLogger(__name__)
_ids = itertools.count()


@dataclass(frozen=True)
class Delta:
    """New reply text to stream."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The reply ended (``reason``: ``stop`` or ``length``) after ``completion_tokens`` decoding steps."""

    reason: str
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    """The batch failed; ``message`` says why."""

    message: str


Event = Delta | Finished | Failed


@dataclass
class Job:
    """One chat completion waiting for, or in, a batch; its events reach the request's event loop.

    Args:
        control: the control that steers it.
        multiplier: its ``m``.
        prompt_ids: the chat-templated prompt.
        reply: the reply's decoding state (``max_tokens`` and ``stop`` strings included).
        temperature: 0 decodes greedily, above 0 samples.
        seed: seeds the sampling (only with a temperature above 0).
        loop: the event loop of the request that waits for the events.
    """

    control: ServedControl
    multiplier: float
    prompt_ids: list[int]
    reply: Reply
    temperature: float
    seed: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue, init=False)
    cancelled: bool = field(default=False, init=False)
    id: int = field(default_factory=lambda: next(_ids), init=False)
    arrived: float = field(default_factory=time.monotonic, init=False)
    _reported: bool = field(default=False, init=False, repr=False)

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys decode in one batch (see the module's batching rule)."""
        if self.temperature == 0:
            return (self.control.name, "greedy")
        if self.seed is not None:
            return (self.control.name, "seeded", self.id)
        return (self.control.name, "sampled", self.temperature)

    def emit(self, event: Event) -> None:
        """Hands ``event`` to the request's event loop (safe from the worker thread)."""
        if not self.cancelled:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def take(self, token: int) -> None:
        """Feeds the row's next token to the reply; emits the new text, and :class:`Finished` once it ends."""
        if self.cancelled:
            self.reply.finish("cancelled")
        self._report(self.reply.add(token))

    def end(self, reason: str) -> None:
        """Ends the reply (if still open) for ``reason`` and reports it."""
        self._report(self.reply.finish(reason))

    def fail(self, message: str) -> None:
        """Reports a failure unless the reply has been reported finished already."""
        if not self._reported:
            self._reported = True
            self.reply.finish("error")
            self.emit(Failed(message))

    def _report(self, piece: str) -> None:
        if piece:
            self.emit(Delta(piece))
        if self.reply.finished and not self._reported:
            self._reported = True
            self.emit(Finished(str(self.reply.finish_reason), self.reply.steps))


class _BatchWatch(StoppingCriteria):
    """Called by ``model.generate`` after every step: feeds each row's new token to its reply, streams the new
    text and ends the rows whose reply has ended (their ``max_tokens`` or a ``stop`` string) or whose client
    has gone."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        for job, token in zip(self.jobs, input_ids[:, -1].tolist()):
            job.take(token)
        return torch.tensor([job.reply.finished for job in self.jobs], device=input_ids.device)


class BatchWorker:
    """Owns the model: takes waiting jobs in batches (the module's rule) and decodes them on one thread.

    Args:
        served: the backbone and its controls.
        max_batch_size: most rows per batch.
        max_queue: most jobs waiting (429 beyond).
        batch_wait_s: how long the oldest job waits for others to fill its batch.
    """

    def __init__(self, served: ServedModel, max_batch_size: int, max_queue: int, batch_wait_s: float) -> None:
        self.served = served
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        self.waiting: deque[Job] = deque()
        self.running = 0
        self.batches = 0
        self.completions = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lightning-split-serve-batches", daemon=True)

    def start(self) -> None:
        """Starts the decoding thread."""
        self._thread.start()

    def close(self) -> None:
        """Stops after the running batch; waiting jobs fail with a message."""
        with self._cond:
            self._closed = True
            left = list(self.waiting)
            self.waiting.clear()
            self._cond.notify_all()
        for job in left:
            job.fail("the server is shutting down; send the request again when it is back")
        if self._thread.is_alive():
            self._thread.join()

    def submit(self, job: Job) -> None:
        """Queues ``job``.

        Raises:
            ApiError: (429) ``max_queue`` jobs are waiting already; (503) the server is shutting down.
        """
        with self._cond:
            if self._closed:
                raise ApiError(503, "the server is shutting down", code="shutting_down")
            if len(self.waiting) >= self.max_queue:
                raise ApiError(
                    429,
                    f"the request queue is full ({self.max_queue} requests waiting); retry shortly, send fewer "
                    "requests at once, or start the server with a larger --max-queue",
                    code="queue_full",
                )
            self.waiting.append(job)
            self._cond.notify_all()

    def stats(self) -> dict[str, int]:
        """Waiting and running requests, batches and completions so far, the limits."""
        with self._cond:
            return {"waiting": len(self.waiting), "running": self.running, "batches": self.batches,
                    "completions": self.completions, "max_queue": self.max_queue,
                    "max_batch_size": self.max_batch_size}  # fmt: skip

    def _next_batch(self) -> list[Job] | None:
        """Blocks until a batch is due (full, or its oldest job has waited ``batch_wait_s``); ``None`` when closed."""
        with self._cond:
            while True:
                while self.waiting and self.waiting[0].cancelled:
                    self.waiting.popleft()
                if self._closed:
                    return None
                if not self.waiting:
                    self._cond.wait()
                    continue
                key = self.waiting[0].batch_key
                batch = [job for job in self.waiting if job.batch_key == key and not job.cancelled]
                batch = batch[: self.max_batch_size]
                due = self.waiting[0].arrived + self.batch_wait_s - time.monotonic()
                if len(batch) == self.max_batch_size or due <= 0 or key[1] == "seeded":
                    for job in batch:
                        self.waiting.remove(job)
                    self.running = len(batch)
                    return batch
                self._cond.wait(due)

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._decode(batch)
            except Exception as err:  # the batch's clients get the message; the server keeps serving
                log.exception("batch of %d failed", len(batch))
                for job in batch:
                    job.fail(f"generation failed: {type(err).__name__}: {err}")
            with self._cond:
                self.running = 0
                self.batches += 1
                self.completions += len(batch)

    def _decode(self, batch: list[Job]) -> None:
        """One ``generate_steered`` call for the batch; every job gets its :class:`Finished` event."""
        first = batch[0]
        sampled = first.temperature > 0
        generate_steered(
            self.served.model,
            self.served.tokenizer,
            self.served.layout,
            first.control.modules,
            [job.prompt_ids for job in batch],
            torch.tensor([job.multiplier for job in batch]),
            trained_positions(first.control.metadata),  # type: ignore[arg-type]
            max_new_tokens=max(job.reply.max_tokens for job in batch),
            do_sample=sampled,
            temperature=first.temperature if sampled else 1.0,
            seed=first.seed if sampled else None,
            stopping_criteria=[_BatchWatch(batch)],
        )
        for job in batch:  # a row still open when generate returns ran to max_new_tokens
            job.end("length")
