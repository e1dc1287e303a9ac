"""Guarantees 1-3 and 6, deterministic on a manual clock: outflow, max_active, quota,
abandonment. Admission is stepped by hand (the app's own loop is off)."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from queue_service.appkeys import STORE
from queue_service.clock import ManualClock
from tests.helpers.support import admin_view, admit, join_ok, poll_ok, put_wave


async def join_n(client: TestClient, wave: str, n: int, prefix: str = "r") -> list[str]:
    return [(await join_ok(client, wave, f"{prefix}{i}"))["ticket"] for i in range(n)]


async def test_outflow_is_rate_times_window_plus_burst(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, "w", admit_rate=2.5, admit_burst=3)
    await join_n(client, "w", 100)
    admitted_per_step = []
    for _ in range(40):  # 10 s in 0.25 s steps
        admitted_per_step.append(len((await admit(client, "w")).admitted))
        clock.advance(0.25)
    # the bucket starts full (burst 3), then refills at 2.5/s
    assert admitted_per_step[0] == 3
    for width in range(1, 41):
        for start in range(0, 41 - width):
            window_s = width * 0.25
            assert sum(admitted_per_step[start : start + width]) <= 2.5 * window_s + 3
    assert sum(admitted_per_step) == 3 + int(2.5 * 9.75)


async def test_concurrent_admission_calls_never_over_admit(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, "w", admit_rate=1000, admit_burst=1000, max_active=5)
    await join_n(client, "w", 50)
    store = client.app[STORE]
    steps = await asyncio.gather(*(store.admit("w") for _ in range(100)))
    assert sum(len(s.admitted) for s in steps) == 5
    assert (await admin_view(client, "w"))["counts"]["active"] == 5


async def test_max_active_slot_freed_by_complete_and_by_ttl(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, "w", admit_rate=1000, max_active=2, session_ttl_s=30)
    tickets = await join_n(client, "w", 6)
    assert [a.seq for a in (await admit(client, "w")).admitted] == [1, 2]
    assert (await admit(client, "w")).admitted == []
    token = (await poll_ok(client, "w", tickets[0]))["token"]
    for _ in range(2):  # idempotent: the second complete frees nothing more
        response = await client.post(
            "/api/v1/waves/w/complete", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 204
    assert [a.seq for a in (await admit(client, "w")).admitted] == [3]
    clock.advance(31)  # sessions 2 and 3 expire
    step = await admit(client, "w")
    assert [a.seq for a in step.admitted] == [4, 5]
    assert step.counts.expired == 2 and step.counts.completed == 1
    assert (await poll_ok(client, "w", tickets[1]))["state"] == "expired"


async def test_quota_is_never_exceeded_and_then_the_wave_is_full(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, "w", admit_rate=1000, admit_burst=1000, quota=7)
    tickets = await join_n(client, "w", 20)
    store = client.app[STORE]
    steps = await asyncio.gather(*(store.admit("w") for _ in range(30)))
    assert sum(len(s.admitted) for s in steps) == 7
    view = await admin_view(client, "w")
    assert view["state"] == "full" and view["counts"]["admitted"] == 7
    assert (await poll_ok(client, "w", tickets[10]))["state"] == "closed"
    response = await client.post("/api/v1/waves/w/join", json={"registrant": "late"})
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "wave_full"


async def test_abandoned_tickets_cost_no_outflow_slot_or_quota(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(
        client, "w", admit_rate=1, admit_burst=1, max_active=1, quota=2, abandon_after_s=60
    )
    gone = await join_n(client, "w", 5, prefix="gone")
    clock.advance(30)
    live = await join_n(client, "w", 2, prefix="live")
    clock.advance(40)  # the first five were last seen 70 s ago; the live ones 40 s ago
    for ticket in live:
        await poll_ok(client, "w", ticket)
    step = await admit(client, "w")
    # one token, one slot: spent on the first live ticket, the five abandoned skipped for free
    assert [a.seq for a in step.admitted] == [6]
    assert step.counts.abandoned == 5 and step.counts.active == 1
    assert (await poll_ok(client, "w", gone[0]))["state"] == "expired"
    token = (await poll_ok(client, "w", live[0]))["token"]
    await client.post("/api/v1/waves/w/complete", headers={"Authorization": f"Bearer {token}"})
    clock.advance(1)
    step = await admit(client, "w")
    assert [a.seq for a in step.admitted] == [7]
    assert step.counts.admitted == 2 and step.counts.state == "full"


async def test_left_tickets_are_skipped_for_free(client: TestClient, clock: ManualClock) -> None:
    await put_wave(client, "w", admit_rate=1, admit_burst=1)
    tickets = await join_n(client, "w", 3)
    for ticket in tickets[:2]:
        response = await client.post("/api/v1/waves/w/leave", headers={"X-Queue-Ticket": ticket})
        assert response.status == 204
    assert [a.seq for a in (await admit(client, "w")).admitted] == [3]
    assert (await admin_view(client, "w"))["counts"]["left"] == 2
