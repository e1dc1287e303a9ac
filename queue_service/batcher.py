"""Coalesce concurrent requests into one Redis round trip.

Requests that arrive in the same event-loop iteration for the same wave are handed to one
script call (in arrival order, so join order is preserved). At low load a batch holds one
request and costs nothing extra; at high load one EVALSHA serves hundreds of requests, which
is what lets one Python process keep up with Redis.

While a wave's batch is in flight, its next requests wait for it and then go together: one
call per wave per Redis round trip, not per loop iteration. Under load this makes batches as
large as the round trip allows (fewer calls, less Python and Redis work per request) and it
keeps a wave's batches in order; a request waits at most for one batch ahead of it (a stalled
Redis: two store timeouts, then 503). Idle, nothing waits. The next batch leaves as soon as
the answers of the one ahead are back, before those answers are written to their clients, so
Redis and the process work at the same time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from queue_service import metrics

K = TypeVar("K")
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


class Coalescer(Generic[K, I, R]):
    def __init__(
        self,
        op: str,
        flush: Callable[[K, list[I]], Awaitable[list[R]]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._op = op
        self._batch_size = metrics.batch_size.labels(op)  # looked up once, not per batch
        self._flush = flush
        self._max_batch = max_batch
        self._pending: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[K] = set()
        """Keys with a batch running; their pending requests wait for it."""
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(self, key: K, item: I) -> asyncio.Future[R]:
        loop = self._loop
        if loop is None:
            # looked up once: asyncio.get_running_loop() makes a getpid() system call each time
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.setdefault(key, []).append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_pending)
        return future

    def _flush_pending(self) -> None:
        self._scheduled = False
        for key in list(self._pending):
            self._start_batch(key)

    def _start_batch(self, key: K) -> None:
        """Send `key`'s pending requests as one batch, unless one is in flight."""
        if key in self._in_flight:
            return
        entries = self._pending.pop(key, None)
        if not entries:
            return
        if len(entries) > self._max_batch:
            self._pending[key] = entries[self._max_batch :]
            entries = entries[: self._max_batch]
        self._in_flight.add(key)
        task = asyncio.create_task(self._run(key, entries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finished(self, key: K) -> None:
        self._in_flight.discard(key)
        # The key's next batch (everything that arrived during this round trip) leaves now,
        # before this batch's answers are written: Redis works on it meanwhile.
        self._start_batch(key)

    async def _run(self, key: K, entries: list[tuple[I, asyncio.Future[R]]]) -> None:
        self._batch_size.observe(len(entries))
        try:
            results = await self._flush(key, [item for item, _ in entries])
        except asyncio.CancelledError:
            self._finished(key)
            for _, future in entries:
                future.cancel()
            raise
        except Exception as exc:
            self._finished(key)
            for _, future in entries:
                if not future.done():
                    future.set_exception(exc)
            return
        self._finished(key)
        for (_, future), result in zip(entries, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def drain(self) -> None:
        """Wait for batches in flight and those queued behind them (graceful shutdown)."""
        while self._tasks or self._pending:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:
                await asyncio.sleep(0)  # a flush is scheduled for the next iteration
