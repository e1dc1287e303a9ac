"""Event-loop lag: how late the loop wakes a task whose timer is due, and from it the queueing
delay the adaptive bounds act on (overload.py, adaptive_limit.py).

A process whose loop is saturated (too many requests, a blocking call, a long GC pause) answers
every request late; this shows it before clients time out. One monitor task per process; it
costs one timer every 50 ms, nothing on the request path.
"""

from __future__ import annotations

import asyncio
import time

from queue_service import metrics
from queue_service.overload import OverloadGuard

QUEUE_DELAY_PER_LAG = 2.0
"""A timer falls due at a random moment of a loop turn and runs when the turn ends: half a turn
late on average. A request that arrives during a turn waits for its end and is served in the
next one: about a whole turn. So a request's wait for the loop is about twice the lag (measured:
1.7 to 1.8 times the mean lag, from Little's law on floods of 300 to 1,200 connections)."""


async def monitor_event_loop_lag(guard: OverloadGuard, interval_s: float = 0.05) -> None:
    """Sleep `interval_s` again and again and observe how much later than asked we woke up;
    the overload guard sheds new requests while the lag is too high and adapts its bounds to
    the queueing delay it implies (overload.py).

    Runs until cancelled (start it in a cleanup_ctx, cancel it at shutdown).
    """
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        now = loop.time()
        lag = max(0.0, now - due)
        # the process's CPU time: a loop that is late while the process is idle is waiting for
        # a CPU other processes hold (adaptive_limit.py)
        guard.observe(now, lag, QUEUE_DELAY_PER_LAG * lag, time.process_time())
        metrics.event_loop_lag.observe(lag)
