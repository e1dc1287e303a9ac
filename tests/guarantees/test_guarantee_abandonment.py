"""Guarantee 6: a ticket is abandoned only when its holder missed the poll deadline it was
given while the service was answering; skipped tickets cost no outflow, slot or quota; an
outage of Redis or of the service never costs a place, however long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from queue_service import admission_policy
from queue_service.app import create_app
from queue_service.clock import ManualClock
from queue_service.http.appkeys import SERVICE
from queue_service.keys import WaveKeys
from queue_service.redis_server import EmbeddedRedis
from queue_service.settings import Settings
from tests.helpers.support import (
    ADMIN,
    T0,
    admin_view,
    admit,
    join,
    join_ok,
    poll,
    poll_ok,
    put_wave,
)

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
    deadline_s = told / 1000 * admission_policy.DEADLINE_SLACK + 10
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


# -- what the cursor has passed is reclaimed -------------------------------------------------


async def bucket_fields(redis: aioredis.Redis, wave: str, kind: str) -> int:
    keys = [k async for k in redis.scan_iter(match=f"{WaveKeys(wave).prefix}{kind}:*")]
    return sum([await redis.hlen(k) for k in keys])


async def test_finished_tickets_leave_nothing_behind_but_a_registration(
    client: TestClient, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    """Over a wave, the state of every ticket the cursor has passed and that did not register
    is reclaimed in Redis (left, abandoned, expired sessions, the pre-queue order, the left
    list) and in the process (who left, pre-queue ranks); each still answers truthfully."""
    await put_wave(client, "w", opens_at=T0 + 10, prequeue_s=60, admit_rate=1000,
                   admit_burst=1000, abandon_after_s=5, session_ttl_s=30)  # fmt: skip

    async def pass_time(seconds: int, present: list[str]) -> None:
        """Time goes by, the admission loop stepping every second and the present polling."""
        for _ in range(seconds):
            for ticket in present:
                await poll_ok(client, "w", ticket)
            await client.app[SERVICE].seen.flush()
            clock.advance(1)
            await admit(client, "w")

    async def leave(ticket: str) -> None:
        await client.post("/api/v1/waves/w/leave", headers={"X-Queue-Ticket": ticket})

    await admit(client, "w")
    early = [(await join_ok(client, "w", f"p{i}"))["ticket"] for i in range(20)]
    for ticket in early[:5]:
        await leave(ticket)
    # it opens: all 15 are admitted (the 10 absent ones were still within the grace their
    # last answer gave them), and the admissions of the absent 10 lapse unclaimed
    await pass_time(11, present=early[5:10])
    await client.post("/admin/v1/waves/w/pause", headers=ADMIN)
    later = [(await join_ok(client, "w", f"q{i}"))["ticket"] for i in range(30)]
    for ticket in later[:10]:
        await leave(ticket)
    await pass_time(7, present=later[10:20])  # the other 10 stop polling
    await client.post("/admin/v1/waves/w/resume", headers=ADMIN)
    await pass_time(1, present=later[10:20])
    for ticket in early[5:10]:  # they register and end their sessions
        token = (await poll_ok(client, "w", ticket))["token"]
        done = await client.post(
            "/api/v1/waves/w/complete", headers={"Authorization": f"Bearer {token}"}
        )
        assert done.status == 204
    for ticket in later[10:20]:
        assert (await poll_ok(client, "w", ticket))["state"] == "admitted"  # and never finish
    await pass_time(31, present=[])

    counts = (await admin_view(client, "w"))["counts"]
    assert (counts["completed"], counts["left"], counts["abandoned"]) == (5, 15, 10)
    assert counts["expired"] == 20 and counts["waiting"] == 0
    for kind in ("tk", "seen", "reg"):
        assert await bucket_fields(redis_client, "w", kind) == 5, kind  # the registrations
    keys = WaveKeys("w")
    assert not await redis_client.exists(keys.prequeue)
    assert await redis_client.llen(keys.left) == 0
    runtime = client.app[SERVICE].registry.loaded["w"]
    assert len(runtime.left) == 0 and not runtime.ranks
    for ticket in early[:5] + early[10:] + later[:10] + later[10:]:
        assert (await poll_ok(client, "w", ticket))["state"] == "expired"
    for ticket in early[5:10]:
        assert (await poll_ok(client, "w", ticket))["state"] == "completed"
    client.session.cookie_jar.clear()
    assert (await join(client, "w", "p12"))[0] == 201  # a reclaimed registrant joins anew
    assert (await join(client, "w", "p6"))[1]["error"]["code"] == "already_queued"
