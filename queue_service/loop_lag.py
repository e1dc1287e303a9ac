"""Event-loop lag: how late the loop wakes a task whose timer is due.

A process whose loop is saturated (too many requests, a blocking call, a long GC pause) answers
every request late; this shows it before clients time out. One monitor task per process.
"""

from __future__ import annotations

import asyncio

from queue_service import metrics


async def monitor_event_loop_lag(interval_s: float = 0.25) -> None:
    """Sleep `interval_s` again and again and observe how much later than asked we woke up.

    Runs until cancelled (start it in a cleanup_ctx, cancel it at shutdown).
    """
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        metrics.event_loop_lag.observe(max(0.0, loop.time() - due))
