"""Dynamic batching: concurrent requests gathered for a few milliseconds into one decode.

A request is a list of texts plus the options it was asked with (``key``: beam size, n-best, ...). Callers
``await batcher.submit(texts, key)``; one worker task takes the first waiting request, keeps gathering for up to
``max_wait_ms`` (or until ``max_batch_texts`` texts are waiting), then decodes each group of requests that share a
key with one call of ``decode(key, texts) -> results`` (one result per text, in order) on a single worker thread,
so the event loop keeps accepting requests while the model runs. Each caller gets back its own slice.

Requests whose caller went away (the awaiting task was cancelled, e.g. the client disconnected) are dropped before
decoding. ``max_requests = 1`` turns batching off: one request per decode, in arrival order. Every caller gets an
answer: its results, the decode's error, or :class:`BatcherStopped` when :meth:`DynamicBatcher.stop` came first
(whether its request was queued, being gathered, or being decoded).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

DecodeFn = Callable[[Hashable, list[str]], Sequence[Any]]


class BatcherBusy(Exception):
    """Too many requests are waiting (``max_pending``); the caller should retry later."""


class BatcherStopped(RuntimeError):
    """The batcher stopped (the server is shutting down) before this request was answered."""


@dataclass
class _Request:
    texts: list[str]
    key: Hashable
    future: asyncio.Future


@dataclass
class BatcherStats:
    """Counters since start: decodes run, requests and texts decoded, requests dropped as cancelled, and the
    largest number of requests one decode served."""

    decodes: int = 0
    requests: int = 0
    texts: int = 0
    cancelled: int = 0
    largest_batch_requests: int = 0
    batch_sizes: list[int] = field(default_factory=list, repr=False)  # requests per decode, the last 1000


class DynamicBatcher:
    """Gathers concurrent requests into batched decodes (see the module docstring).

    Args:
        decode: ``decode(key, texts) -> results``, run on one worker thread (never two decodes at once).
        max_wait_ms: how long the first waiting request waits for others to join its batch.
        max_batch_texts: a batch closes early once this many texts are gathered.
        max_requests: at most this many requests per batch (1 = no batching).
        max_pending: requests waiting or being decoded at once; more raise :class:`BatcherBusy`.
    """

    def __init__(self, decode: DecodeFn, max_wait_ms: float = 5.0, max_batch_texts: int = 64,
                 max_requests: int | None = None, max_pending: int = 256) -> None:
        if max_wait_ms < 0 or max_batch_texts < 1 or (max_requests is not None and max_requests < 1) or max_pending < 1:
            raise ValueError("max_wait_ms must be >= 0 and max_batch_texts, max_requests, max_pending >= 1")
        self.decode = decode
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch_texts = max_batch_texts
        self.max_requests = max_requests
        self.max_pending = max_pending
        self.stats = BatcherStats()
        self.pending = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle (inside the running loop)
    async def start(self) -> None:
        self._stopped = False
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self._worker = asyncio.create_task(self._run(), name="dynamic-batcher")

    async def stop(self) -> None:
        """Stop the worker: every request not yet answered (queued, being gathered or being decoded) fails with
        :class:`BatcherStopped`, and so does any submitted from now on; a running decode finishes its thread."""
        self._stopped = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            self._fail([self._queue.get_nowait()])
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # ------------------------------------------------------------------ callers
    async def submit(self, texts: list[str], key: Hashable) -> list[Any]:
        """Queue ``texts`` for decoding with options ``key``; returns one result per text, in order."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running (call start() inside the event loop first)")
        if self._stopped:
            raise BatcherStopped("the server is shutting down")
        if self.pending >= self.max_pending:
            raise BatcherBusy(f"{self.pending} requests are already waiting (max_pending={self.max_pending})")
        future = asyncio.get_running_loop().create_future()
        self.pending += 1
        try:
            await self._queue.put(_Request(list(texts), key, future))
            return await future  # cancelling this await cancels the future: the worker then skips the request
        finally:
            self.pending -= 1

    # ------------------------------------------------------------------ the worker
    async def _gather(self) -> list[_Request]:
        """The first waiting request plus whatever arrives within ``max_wait`` (up to the batch limits)."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        texts = len(batch[0].texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        try:
            while texts < self.max_batch_texts and (self.max_requests is None or len(batch) < self.max_requests):
                if not self._queue.empty():
                    request = self._queue.get_nowait()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        request = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                batch.append(request)
                texts += len(request.texts)
        except asyncio.CancelledError:  # stopped in the wait window: the requests taken from the queue are ours
            self._fail(batch)
            raise
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            try:
                await self._decode_batch(batch)
            except asyncio.CancelledError:  # stopping: nobody will answer these callers any more
                self._fail(batch)
                raise

    @staticmethod
    def _fail(requests: list[_Request]) -> None:
        for request in requests:
            if not request.future.done():
                request.future.set_exception(BatcherStopped("the server is shutting down"))

    async def _decode_batch(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        live = [r for r in batch if not r.future.done()]
        self.stats.cancelled += len(batch) - len(live)
        groups: dict[Hashable, list[_Request]] = defaultdict(list)
        for request in live:
            groups[request.key].append(request)
        for key, requests in groups.items():
            texts = [text for r in requests for text in r.texts]
            try:
                results = await loop.run_in_executor(self._executor, self.decode, key, texts)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the callers get the error; the worker keeps serving
                logger.exception("decoding a batch of %d texts failed", len(texts))
                for r in requests:
                    if not r.future.done():
                        r.future.set_exception(err)
                continue
            self._record(requests, texts)
            position = 0
            for r in requests:
                if not r.future.done():
                    r.future.set_result(list(results[position : position + len(r.texts)]))
                position += len(r.texts)

    def _record(self, requests: list[_Request], texts: list[str]) -> None:
        stats = self.stats
        stats.decodes += 1
        stats.requests += len(requests)
        stats.texts += len(texts)
        stats.largest_batch_requests = max(stats.largest_batch_requests, len(requests))
        stats.batch_sizes = stats.batch_sizes[-999:] + [len(requests)]
