"""Poll deadlines promised to waiting holders, buffered per wave and written to Redis in batches.

A status poll answered from the process's copy of the wave costs no Redis round trip; what it
must still leave behind is the deadline it promised (poll time + interval + grace), so that
the admission step does not skip a holder who is still there. Deadlines are kept here (the
latest per ticket) and flushed every `flush_interval_s` with one script call per wave and
batch (lua/seen.lua). The flush delay is far below any grace (waves.MIN_GRACE_S), so a holder
who polls before the deadline they were given is never skipped for it.

Polls answered while Redis is unreachable are buffered too, and written when it returns: a
ticket whose holder kept polling through a partial outage (another process still reaching
Redis and admitting) keeps its place. A failed flush keeps its deadlines for the next one.
"""

from __future__ import annotations

import asyncio
import logging

from queue_service.errors import StoreUnavailable, UnknownWave
from queue_service.store import Store

log = logging.getLogger(__name__)

FLUSH_BATCH = 2000
MAX_BUFFERED_PER_WAVE = 1_000_000
"""Beyond this (a very long outage with millions polling) the earliest deadlines are dropped:
the outage credit (lua/admit.lua) still keeps those holders' places."""


class SeenBuffer:
    def __init__(self, store: Store, flush_interval_s: float = 0.5) -> None:
        self._store = store
        self.flush_interval_s = flush_interval_s
        self._pending: dict[str, dict[int, int]] = {}

    def record(self, wave: str, seq: int, deadline_ms: int) -> None:
        deadlines = self._pending.get(wave)
        if deadlines is None:
            deadlines = self._pending[wave] = {}
        if deadlines.get(seq, 0) < deadline_ms:
            deadlines[seq] = deadline_ms
            if len(deadlines) > MAX_BUFFERED_PER_WAVE:
                del deadlines[next(iter(deadlines))]

    def pending(self, wave: str) -> int:
        return len(self._pending.get(wave, ()))

    async def flush(self) -> None:
        """Write every buffered deadline; what could not be written stays for the next flush."""
        pending, self._pending = self._pending, {}
        for wave, deadlines in pending.items():
            items = list(deadlines.items())
            for start in range(0, len(items), FLUSH_BATCH):
                batch = dict(items[start : start + FLUSH_BATCH])
                try:
                    await self._store.record_deadlines(wave, batch)
                except UnknownWave:
                    break  # the wave was deleted: its deadlines matter to nobody
                except StoreUnavailable:
                    for seq, deadline in items[start:]:
                        self.record(wave, seq, deadline)
                    break

    async def run(self) -> None:
        """Flush every `flush_interval_s` until cancelled (a cleanup_ctx task)."""
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:
                log.exception("writing poll deadlines failed")
