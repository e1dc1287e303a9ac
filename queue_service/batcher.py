"""Coalesce concurrent requests into one Redis round trip.

Requests that arrive in the same event-loop iteration for the same wave are handed to one
script call (in arrival order, so join order is preserved). At low load a batch holds one
request and costs nothing extra; at high load one EVALSHA serves hundreds of requests, which
is what lets one Python process keep up with Redis.

While a wave's batch is in flight, its next requests wait for it and then go together: one
call per wave per Redis round trip, not per loop iteration. Under load this makes batches as
large as the round trip allows (fewer calls, less Python and Redis work per request) and it
keeps a wave's batches in order; a request waits at most for one batch ahead of it (a stalled
Redis: two store timeouts, then 503). Idle, nothing waits.
"""

from __future__ import annotations

import asyncio
import functools
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
        self._in_flight: dict[K, int] = {}
        """Batches running per key; pending requests of such a key wait for them."""

    def submit(self, key: K, item: I) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.setdefault(key, []).append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_pending)
        return future

    def _flush_pending(self) -> None:
        self._scheduled = False
        ready = [key for key in self._pending if not self._in_flight.get(key)]
        for key in ready:
            entries = self._pending.pop(key)
            for start in range(0, len(entries), self._max_batch):
                chunk = entries[start : start + self._max_batch]
                self._in_flight[key] = self._in_flight.get(key, 0) + 1
                task = asyncio.create_task(self._run(key, chunk))
                self._tasks.add(task)
                task.add_done_callback(functools.partial(self._batch_done, key))

    def _batch_done(self, key: K, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        left = self._in_flight[key] - 1
        if left:
            self._in_flight[key] = left
            return
        del self._in_flight[key]
        if key in self._pending and not self._scheduled:
            # the wave's next batch: everything that arrived during the round trip
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_pending)

    async def _run(self, key: K, entries: list[tuple[I, asyncio.Future[R]]]) -> None:
        self._batch_size.observe(len(entries))
        try:
            results = await self._flush(key, [item for item, _ in entries])
        except Exception as exc:
            for _, future in entries:
                if not future.done():
                    future.set_exception(exc)
            return
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
