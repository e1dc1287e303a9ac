"""Guarantee 6: a ticket is abandoned only when its holder missed the poll deadline it was
given while the service was answering; skipped tickets cost no outflow, slot or quota; an
outage of Redis or of the service never costs a place, however long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from queue_service import pacing
from queue_service.app import create_app
from queue_service.appkeys import SERVICE
from queue_service.clock import ManualClock
from queue_service.redis_server import EmbeddedRedis
from queue_service.settings import Settings
from tests.helpers.support import admin_view, admit, join_ok, poll, poll_ok, put_wave

STEP_S = 0.5  # the admission loop's pace in these manual-clock tests (no outage credit)


async def run_for(client: TestClient, clock: ManualClock, wave: str, seconds: float) -> int:
    """Step admission every STEP_S for `seconds` of manual time, writing the buffered poll
    deadlines before each step as the service's flush task does; admissions made."""
    admitted = 0
    for _ in range(round(seconds / STEP_S)):
        await client.app[SERVICE].seen.flush()
        clock.advance(STEP_S)
        admitted += len((await admit(client, wave)).admitted)
    return admitted


async def test_a_holder_far_back_polling_as_told_is_never_abandoned(
    client: TestClient, clock: ManualClock
) -> None:
    """Far back, the poll interval is minutes, far beyond the grace: a holder who follows it
    keeps the place (the deadline is the one the holder was given, not a wave-wide timeout)."""
    await put_wave(client, "w", admit_rate=0.5, admit_burst=1, abandon_after_s=5)
    await admit(client, "w")
    tickets = [(await join_ok(client, "w", f"r{i}"))["ticket"] for i in range(120)]
    mine = tickets[-1]
    view = await poll_ok(client, "w", mine)
    assert view["poll_after_ms"] > 2 * 5 * 1000  # far longer than the grace
    others = tickets[:-1]
    while view["state"] == "waiting":
        # everyone ahead polls often enough too; `mine` only as told
        wait_s = view["poll_after_ms"] / 1000
        elapsed = 0.0
        while elapsed < wait_s:
            for ticket in others:
                await poll(client, "w", ticket)
            step = min(5.0, wait_s - elapsed)
            await run_for(client, clock, "w", step)
            elapsed += step
        view = await poll_ok(client, "w", mine)
        others = [t for t in others if (await poll_ok(client, "w", t))["state"] == "waiting"]
    assert view["state"] == "admitted"
    assert (await admin_view(client, "w"))["counts"]["abandoned"] == 0


async def test_a_holder_who_stops_polling_is_skipped_after_deadline_and_grace(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, "w", admit_rate=1, admit_burst=1, max_active=1, quota=2,
                   abandon_after_s=10)  # fmt: skip
    await admit(client, "w")
    gone = (await join_ok(client, "w", "gone"))["ticket"]
    live = (await join_ok(client, "w", "live"))["ticket"]
    told = (await poll_ok(client, "w", gone))["poll_after_ms"]
    await client.app[SERVICE].seen.flush()
    # nobody is admitted meanwhile: the wave is paused while the deadline runs out
    await client.post(
        "/admin/v1/waves/w/pause", headers={"Authorization": "Bearer test-admin-token"}
    )
    deadline_s = told / 1000 * pacing.DEADLINE_SLACK + 10
    elapsed = 0.0
    while elapsed < deadline_s + 1:
        await poll_ok(client, "w", live)
        await run_for(client, clock, "w", 1.0)
        elapsed += 1.0
    await client.post(
        "/admin/v1/waves/w/resume", headers={"Authorization": "Bearer test-admin-token"}
    )
    step = await admit(client, "w")
    # the one token, slot and quota place went to the live holder; the gone one cost nothing
    assert [a.seq for a in step.admitted] == [2]
    assert step.counts.abandoned == 1 and step.counts.active == 1
    assert (await poll_ok(client, "w", gone))["state"] == "expired"
    assert (await poll_ok(client, "w", live))["state"] == "admitted"


async def test_a_gap_in_admission_steps_is_an_outage_that_costs_nobody_a_place(
    client: TestClient, clock: ManualClock
) -> None:
    """No admission step for a long time means no process reached Redis: that time does not
    count toward abandonment (service time stops), however long it lasts."""
    await put_wave(client, "w", admit_rate=1, admit_burst=1, abandon_after_s=10)
    await admit(client, "w")
    tickets = [(await join_ok(client, "w", f"r{i}"))["ticket"] for i in range(5)]
    for ticket in tickets:
        await poll_ok(client, "w", ticket)
    await client.app[SERVICE].seen.flush()
    await run_for(client, clock, "w", 2.0)
    clock.advance(600)  # ten minutes with no admission step anywhere
    admitted = await run_for(client, clock, "w", 2.0)
    counts = (await admin_view(client, "w"))["counts"]
    assert counts["abandoned"] == 0 and admitted == 2


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "own-redis", appendonly=True, appendfsync="always")
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
async def test_redis_down_for_twice_the_grace_costs_no_polling_holder_a_place(
    own_redis: EmbeddedRedis,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
) -> None:
    """The issue's reproduction, on the real clock with the real admission loop: 30 holders
    polling every second, Redis killed for 2 x abandon_after_s, then back. The one admitted
    session ends during the outage, so the very first admission step after it scans the head
    of the queue, before any holder could poll again. Nobody polling is skipped or expired; a
    holder who had really left before the outage still is."""
    grace_s = 6.0
    app = create_app(make_settings(redis_url=own_redis.url, redis_timeout_s=0.3))
    client = await aiohttp_client(app)
    now = time.time()
    await put_wave(client, "w", opens_at=now - 5, closes_at=now + 600, admit_rate=50,
                   max_active=1, session_ttl_s=2 * grace_s, abandon_after_s=grace_s)  # fmt: skip
    first = (await join_ok(client, "w", "first"))["ticket"]
    gone = (await join_ok(client, "w", "gone"))["ticket"]
    holders = [(await join_ok(client, "w", f"r{i}"))["ticket"] for i in range(30)]
    stop = asyncio.Event()
    answers: dict[int, int] = {}

    async def keep_polling(ticket: str) -> None:
        while not stop.is_set():
            status, _ = await poll(client, "w", ticket)
            answers[status] = answers.get(status, 0) + 1
            await asyncio.sleep(1.0)

    deadline = time.monotonic() + 5
    while (await poll_ok(client, "w", first))["state"] != "admitted":  # its session runs
        assert time.monotonic() < deadline, "the first holder was never admitted"
        await asyncio.sleep(0.1)
    pollers = [asyncio.create_task(keep_polling(t)) for t in holders]
    # `gone` never polls again: its deadline (1 s + 10% + grace) passes before the outage
    await asyncio.sleep(grace_s + 3)
    own_redis.kill()
    await asyncio.sleep(2 * grace_s)  # the admitted session's TTL runs out meanwhile
    own_redis.start()
    deadline = time.monotonic() + 15
    while (await client.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, "service did not recover by itself"
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    stop.set()
    await asyncio.gather(*pollers)

    assert answers.get(503, 0) > 0, "the outage was not seen by the pollers"
    counts = (await admin_view(client, "w"))["counts"]
    assert counts["abandoned"] == 1, counts  # only the one who really left
    assert counts["expired"] == 1 and counts["admitted"] == 2, counts  # first, then one more
    states = [(await poll_ok(client, "w", t))["state"] for t in holders]
    assert states.count("admitted") == 1 and states.count("waiting") == 29, states
    assert (await poll_ok(client, "w", gone))["state"] == "expired"
