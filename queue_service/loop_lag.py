"""Event-loop lag: how late the loop wakes a task whose timer is due.

A process whose loop is saturated (too many requests, a blocking call, a long GC pause) answers
every request late; this shows it before clients time out. One monitor task per process.
"""

from __future__ import annotations

import asyncio

from queue_service import metrics
from queue_service.overload import OverloadGuard


async def monitor_event_loop_lag(guard: OverloadGuard, interval_s: float = 0.1) -> None:
    """Sleep `interval_s` again and again and observe how much later than asked we woke up;
    the overload guard sheds new requests while the lag is too high (overload.py).

    Runs until cancelled (start it in a cleanup_ctx, cancel it at shutdown).
    """
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        lag = max(0.0, loop.time() - due)
        guard.lag_s = lag
        metrics.event_loop_lag.observe(lag)
