"""The origin's capacity: a fixed worker pool, a bounded backlog and load-dependent service
times, so an overloaded origin degrades the way real servers do.

- At most `capacity` requests are served at once (an asyncio semaphore, the worker pool).
- Up to `backlog` more wait for a worker; anything beyond is refused at once (503, overload).
- A request that waits longer than `queue_timeout_s` is dropped (504, timeout): its client has
  usually given up anyway, and retries add more arrivals.
- Service time is log-normal around the step's median, multiplied by a contention factor that
  grows with the backlog. With a deep backlog every worker is slower, so useful throughput
  falls exactly when demand is highest: the metastable collapse of a wave opening.
- The pool can be resized while it serves (`resize`): an origin that loses half its capacity
  mid-wave (the OTP provider throttles, photo storage fills) is what the autopilot must
  follow. Shrinking never interrupts a request: new ones wait until in-flight is below the
  new size.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from simulator.origin.config import OriginConfig


class Overloaded(Exception):
    """The backlog is full: refused without waiting."""


class TimedOut(Exception):
    """Waited longer than the queue timeout for a worker."""


class CapacityModel:
    def __init__(self, config: OriginConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._size = config.capacity
        self._freed = asyncio.Condition()
        self._rng = rng or random.Random(config.seed)
        self.inflight = 0
        self.waiting = 0
        self.peak_inflight = 0

    @property
    def capacity(self) -> int:
        """Requests served at once, now (the configured capacity, or what it was resized to)."""
        return self._size

    async def resize(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._size = capacity
        async with self._freed:
            self._freed.notify_all()

    def slowdown(self) -> float:
        """The contention factor for a request starting service now."""
        pressure = self.waiting / self._size
        factor = 1.0 + self._config.slowdown_per_waiter * pressure
        return min(factor, self._config.max_slowdown)

    def service_time_s(self, step: str) -> float:
        median = self._config.median_service_s(step)
        draw = median * math.exp(self._rng.gauss(0.0, self._config.service_sigma))
        return draw * self.slowdown()

    @asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        """Hold one worker for the body of the `async with`; raise Overloaded or TimedOut."""
        if self.inflight >= self._size and self.waiting >= self._config.backlog:
            raise Overloaded
        self.waiting += 1
        try:
            async with asyncio.timeout(self._config.queue_timeout_s), self._freed:
                await self._freed.wait_for(lambda: self.inflight < self._size)
                self.inflight += 1
        except TimeoutError:
            raise TimedOut from None
        finally:
            self.waiting -= 1
        self.peak_inflight = max(self.peak_inflight, self.inflight)
        try:
            yield
        finally:
            self.inflight -= 1
            async with self._freed:
                self._freed.notify()

    async def work(self, step: str) -> None:
        """Spend one step's service time (call while holding a worker)."""
        await asyncio.sleep(self.service_time_s(step))
