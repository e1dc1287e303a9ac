"""Polling load grows with the log of the queue length: holders who poll as they are told
cost what `pacing.total_poll_rate` says (the planner's figure and the national-scale target),
measured against the real service with thousands of holders."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from queue_service import pacing
from queue_service.app import create_app
from queue_service.http.appkeys import SERVICE
from queue_service.settings import Settings
from tests.helpers.support import ORIGIN, put_wave

pytestmark = pytest.mark.slow

HOLDERS = 3000
ADMIT_RATE = 2.0
WARM_UP_S = 5.0
WINDOW_S = 30.0
TOLERANCE = 0.15  # Poisson noise on ~6,000 polls is ~1%; phases and jitter do the rest


async def test_polite_holders_cost_what_the_polling_function_says(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    now = time.time()
    await put_wave(client, "w", opens_at=now - 5, closes_at=now + 3600, admit_rate=ADMIT_RATE,
                   abandon_after_s=600, origin_url=ORIGIN)  # fmt: skip
    tickets = []
    for start in range(0, HOLDERS, 200):  # joined as a crowd does, in batches
        answers = await asyncio.gather(*(
            client.post("/api/v1/waves/w/join", json={"registrant": f"h{i}"})
            for i in range(start, start + 200)
        ))  # fmt: skip
        for answer in answers:
            body = await answer.json()
            tickets.append((body["ticket"], body["poll_after_ms"]))
    polls: list[float] = []
    stop = time.monotonic() + WARM_UP_S + WINDOW_S
    rng = random.Random(7)

    async def holder(ticket: str, poll_after_ms: int) -> None:
        # arrivals spread over time: the first poll falls anywhere in the first interval
        await asyncio.sleep(rng.uniform(0, poll_after_ms / 1000))
        while time.monotonic() < stop:
            response = await client.get(
                "/api/v1/waves/w/status", headers={"X-Queue-Ticket": ticket}
            )
            polls.append(time.monotonic())
            body = await response.json()
            if body["state"] != "waiting":
                return
            # as the waiting page does: the interval it was told, jittered by +-10%
            await asyncio.sleep(body["poll_after_ms"] / 1000 * rng.uniform(0.9, 1.1))

    started = time.monotonic()
    tasks = [asyncio.create_task(holder(t, p)) for t, p in tickets]
    await asyncio.sleep(WARM_UP_S + WINDOW_S / 2)
    runtime = client.app[SERVICE].registry.loaded["w"]
    assert runtime.counts is not None
    waiting, rate = runtime.counts.waiting, runtime.pace.admissions_per_s
    predicted = pacing.total_poll_rate(waiting, rate, runtime.pace.skip_fraction)
    await asyncio.sleep(max(0.0, stop - time.monotonic()))
    for task in tasks:  # a holder far back may be asleep for minutes: the window is over
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    window = [t for t in polls if started + WARM_UP_S <= t < started + WARM_UP_S + WINDOW_S]
    measured = len(window) / WINDOW_S
    print(f"\n{waiting} waiting at {rate:.2f}/s: {measured:.0f} polls/s, predicted {predicted:.0f}")
    assert measured == pytest.approx(predicted, rel=TOLERANCE), (measured, predicted, waiting)
    # and the load is logarithmic: every holder polling every second would cost 15x more
    assert measured < waiting / 10
