"""Cross-request batching: many HTTP requests, few engine calls.

Each request becomes a :class:`Job` (its texts and decoding options) on an asyncio queue. One batcher
task takes the first waiting job, gathers what else arrives within ``batch_wait_ms`` (and is already
waiting) with the same options, up to ``batch_tokens`` estimated source tokens, and runs the lot as one
``Translator.translate`` call on the engine thread; each job's future then gets its own slice of the
results, in its own order. While the engine works, new requests pile up and form the next batch, so
under load batches grow by themselves and the wait only costs an idle server a few milliseconds.

Merging is only done where it cannot change anyone's output (``config.batch_invariant``): on an ONNX int8
export made with onnxruntime's dynamic quantization, and on ONNX int8_latency and int4, each request is its own
engine call, because there a sentence's translation can depend on its batch neighbours, and a stranger's text
must not change yours.

If a merged call fails, its jobs are retried one by one, so a failure reaches only the request that
caused it. A job whose client gave up (timeout, disconnect) before dispatch is dropped unrun.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field, fields

from mtedge.server.errors import ApiError

log = logging.getLogger("mtedge.serve")


def estimate_tokens(text: str) -> int:
    """Source tokens a text will take, without tokenizing it on the event loop: sentencepiece vocabularies
    average 3-4 characters per token on European text, so /3 errs on the big side; +2 for </s> etc."""
    return len(text) // 3 + 2


@dataclass(frozen=True)
class DecodeKey:
    """What must be equal for two requests to share an engine call."""

    beam_size: int
    num_hypotheses: int = 1


@dataclass(eq=False)
class Job:
    texts: list[str]
    key: DecodeKey
    future: asyncio.Future
    tokens: int = 0

    def __post_init__(self):
        self.tokens = sum(estimate_tokens(t) for t in self.texts)


@dataclass
class Metrics:
    """Counters behind ``GET /metrics`` (mtedge's extension): enough to see whether merging happens."""

    requests: int = 0                  # translation jobs accepted into the queue
    texts: int = 0
    batches: int = 0                   # Translator.translate calls made by the batcher
    merged_batches: int = 0            # of which served more than one request
    largest_batch: int = 0             # most requests served by one call
    engine_calls: int = 0              # engine.translate_ids calls (a Translator call may make several)
    stream_calls: int = 0              # /translate/stream decodings
    rejected_queue_full: int = 0
    timeouts: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_engine_call(self) -> None:
        with self._lock:  # engine calls happen on worker threads
            self.engine_calls += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


class CountingEngine:
    """Wraps the Translator's engine to count its calls; everything else passes through."""

    def __init__(self, engine, metrics: Metrics):
        self._engine = engine
        self._metrics = metrics

    def translate_ids(self, batch, options):
        self._metrics.count_engine_call()
        return self._engine.translate_ids(batch, options)

    def __getattr__(self, name):
        return getattr(self._engine, name)


class Batcher:
    def __init__(self, translator, executor: Executor, *, merge: bool, max_queue: int, batch_tokens: int,
                 batch_wait_ms: float, split_sentences: bool, metrics: Metrics):
        self.translator = translator
        self.executor = executor
        self.merge = merge
        self.max_queue = max_queue
        self.batch_tokens = batch_tokens
        self.wait_s = max(0.0, batch_wait_ms) / 1000.0
        self.split_sentences = split_sentences
        self.metrics = metrics
        self._queue: asyncio.Queue | None = None
        self._carry: deque[Job] = deque()        # gathered but not fitting this batch: first in the next
        self._task: asyncio.Task | None = None
        self._waiting = 0                        # jobs accepted and not yet dispatched
        self.closed = False

    @property
    def waiting(self) -> int:
        return self._waiting

    async def start(self) -> None:
        self._queue = asyncio.Queue()  # unbounded: max_queue is enforced at submit, so close() can always enqueue
        self._task = asyncio.create_task(self._run(), name="mtedge-batcher")

    async def submit(self, texts: list[str], key: DecodeKey, timeout: float):
        """The texts' translations (``Translation`` objects, in order); ApiError 503 when the queue is
        full or the server is stopping, 504 when they are not ready within ``timeout`` seconds."""
        if self.closed:
            raise ApiError(503, "The server is shutting down; retry on another instance or later",
                           {"Retry-After": "5"})
        if self._waiting >= self.max_queue:
            self.metrics.rejected_queue_full += 1
            raise ApiError(503, f"Server busy: the translation queue is full ({self.max_queue} requests "
                                f"waiting); retry in a moment", {"Retry-After": "1"})
        job = Job(list(texts), key, asyncio.get_running_loop().create_future())
        self._waiting += 1
        self.metrics.requests += 1
        self.metrics.texts += len(texts)
        self._queue.put_nowait(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            self.metrics.timeouts += 1
            raise ApiError(504, f"Translation timed out after {timeout:g} s; the server is overloaded or "
                                f"the text is too long") from None
        finally:
            if not job.future.done():
                job.future.cancel()  # the client is gone: the batcher skips it (or drops its result)

    async def close(self) -> None:
        """Stop taking jobs; finish every accepted one; then stop the task."""
        self.closed = True
        if self._task is None:
            return
        self._queue.put_nowait(None)  # after every accepted job: they are all served first
        await self._task
        self._task = None

    # -- the batcher task ----------------------------------------------------------------------
    async def _next(self, timeout: float | None = None):
        """The next job, carried-over ones first; ``None`` marks the end (raises TimeoutError)."""
        if self._carry:
            return self._carry.popleft()
        if timeout is None:
            return await self._queue.get()
        return await asyncio.wait_for(self._queue.get(), timeout)

    def _next_nowait(self):
        """What is already waiting, or asyncio.QueueEmpty."""
        if self._carry:
            return self._carry.popleft()
        return self._queue.get_nowait()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping or self._carry:
            first = await self._next()
            if first is None:
                stopping = True
                continue
            group, tokens = [first], first.tokens
            if self.merge:
                deadline = loop.time() + self.wait_s
                held: list[Job] = []
                while tokens < self.batch_tokens:
                    remaining = deadline - loop.time()
                    try:  # past the window: only what is already waiting
                        job = await self._next(remaining) if remaining > 0 \
                            else self._next_nowait()
                    except (TimeoutError, asyncio.QueueEmpty):
                        break
                    if job is None:
                        stopping = True
                        break
                    if job.key != first.key or tokens + job.tokens > self.batch_tokens:
                        held.append(job)
                        if tokens + job.tokens > self.batch_tokens:
                            break
                        continue
                    group.append(job)
                    tokens += job.tokens
                self._carry.extendleft(reversed(held))
            try:
                await self._dispatch(group)
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop the batcher for everyone
                log.exception("batcher failure")
                for job in group:
                    self._fail(job, exc)

    async def _dispatch(self, group: list[Job]) -> None:
        self._waiting -= len(group)
        live = [job for job in group if not job.future.done()]
        if not live:
            return
        try:
            results = await self._call([t for job in live for t in job.texts], live[0].key, len(live))
        except Exception as exc:  # noqa: BLE001 - any engine failure must reach the waiting clients
            if len(live) == 1:
                self._fail(live[0], exc)
                return
            log.warning("a merged batch of %d requests failed (%s); retrying them one by one", len(live), exc)
            for job in live:
                try:
                    self._resolve(job, await self._call(job.texts, job.key, 1))
                except Exception as single:  # noqa: BLE001
                    self._fail(job, single)
            return
        offset = 0
        for job in live:
            self._resolve(job, results[offset:offset + len(job.texts)])
            offset += len(job.texts)

    async def _call(self, texts: list[str], key: DecodeKey, requests: int) -> list:
        self.metrics.batches += 1
        self.metrics.merged_batches += requests > 1
        self.metrics.largest_batch = max(self.metrics.largest_batch, requests)
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, lambda: self.translator.translate(
                texts, beam_size=key.beam_size, num_hypotheses=key.num_hypotheses,
                split_sentences=self.split_sentences))

    @staticmethod
    def _resolve(job: Job, results: list) -> None:
        if not job.future.done():
            job.future.set_result(results)

    def _fail(self, job: Job, exc: Exception) -> None:
        self.metrics.failures += 1
        if not job.future.done():
            job.future.set_exception(exc)
