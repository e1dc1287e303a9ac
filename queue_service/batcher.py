"""Coalesce concurrent requests into one Redis round trip.

Requests that arrive in the same event-loop iteration for the same wave are handed to one
script call (in arrival order, so join order is preserved). At low load a batch holds one
request and costs nothing extra; at high load one EVALSHA serves hundreds of requests, which
is what lets one Python process keep up with Redis.
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
        self._flush = flush
        self._max_batch = max_batch
        self._pending: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

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
        pending, self._pending = self._pending, {}
        for key, entries in pending.items():
            for start in range(0, len(entries), self._max_batch):
                chunk = entries[start : start + self._max_batch]
                task = asyncio.create_task(self._run(key, chunk))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run(self, key: K, entries: list[tuple[I, asyncio.Future[R]]]) -> None:
        metrics.batch_size.labels(self._op).observe(len(entries))
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
        """Wait for batches in flight (graceful shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
