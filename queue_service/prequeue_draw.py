"""The pre-queue draw at the opening, run by whichever process's admission step finds the wave
open and not drawn (admission.step_wave). The rule is draw.py's; lua/draw.lua keeps one process
at a time on it (a lease) and reveals the seed when the ranks are written. Until then nobody is
admitted: the pre-queue goes first, in the drawn order."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from queue_service import draw
from queue_service.store import Store

log = logging.getLogger(__name__)

PROCESS_OWNER = secrets.token_hex(8)
"""This process, as the holder of a draw's lease."""
LEASE_MS = 60_000
"""A drawing process that dies holds up the opening this long at most."""
RANKS_PER_CALL = 2000
"""Tickets ranked per script call (4000 arguments: well under Lua's unpack limit)."""
IN_THREAD_FROM = 20_000
"""Larger pre-queues are drawn in a thread, so this process keeps answering meanwhile."""


async def draw_prequeue(store: Store, wave: str) -> bool:
    """Draw `wave`'s pre-queue if it is this process's turn; True once the draw is done (by
    this process or any other)."""
    status, seed, size = await store.draw_begin(wave, PROCESS_OWNER, LEASE_MS)
    if status != "drawing":
        return status == "drawn"
    started = time.monotonic()
    leading = await store.carried_ahead(wave)  # carried over from an earlier wave: they lead
    if size >= IN_THREAD_FROM:
        order = await asyncio.to_thread(draw.draw_order, seed, wave, size, leading)
    else:
        order = draw.draw_order(seed, wave, size, leading)
    for first in range(0, size, RANKS_PER_CALL):
        ranks: list[int] = []
        for rank, seq in enumerate(order[first : first + RANKS_PER_CALL], start=first):
            ranks += (rank, seq)
        if not await store.draw_rank(wave, PROCESS_OWNER, size, ranks):
            log.warning("wave %s: the pre-queue draw's lease was lost; another process draws", wave)
            return False
    if not await store.draw_finish(wave, PROCESS_OWNER, size):
        return False
    log.info(
        "wave %s: pre-queue of %d drawn in %.2f s; seed revealed (commitment %s)",
        wave, size, time.monotonic() - started, draw.commitment(seed),
    )  # fmt: skip
    return True
