"""Guarantees 1-3 and 6, deterministic on a manual clock: outflow, max_active, quota,
abandonment. Admission is stepped by hand (the app's own loop is off). Each guarantee is one
test body run on the queue service over Redis and on the offline model's queue (`backend`,
tests/helpers/backends.py): a backend that breaks it fails the test."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from queue_service.clock import ManualClock
from queue_service.http.appkeys import STORE
from tests.helpers.backends import AdmissionBackend
from tests.helpers.support import admin_view, join_ok, put_wave


async def join_n(backend: AdmissionBackend, wave: str, n: int, prefix: str = "r") -> list[str]:
    tickets = []
    for i in range(n):
        joined = await backend.join(wave, f"{prefix}{i}")
        assert joined.status in (200, 201) and joined.ticket, joined
        tickets.append(joined.ticket)
    return tickets


async def test_outflow_is_rate_times_window_plus_burst(backend: AdmissionBackend) -> None:
    await backend.put_wave("w", admit_rate=2.5, admit_burst=3)
    await join_n(backend, "w", 100)
    admitted_per_step = []
    for _ in range(40):  # 10 s in 0.25 s steps
        admitted_per_step.append(len(await backend.admit("w")))
        backend.clock.advance(0.25)
    # the bucket starts full (burst 3), then refills at 2.5/s
    assert admitted_per_step[0] == 3
    for width in range(1, 41):
        for start in range(0, 41 - width):
            window_s = width * 0.25
            assert sum(admitted_per_step[start : start + width]) <= 2.5 * window_s + 3
    assert sum(admitted_per_step) == 3 + int(2.5 * 9.75)
    # every admission is counted once, by the queue's own counter
    assert (await backend.counts("w")).admitted == sum(admitted_per_step)


async def test_concurrent_admission_calls_never_over_admit(
    client: TestClient, clock: ManualClock
) -> None:
    """Many processes step one wave at once (Redis only: the model has one clock)."""
    await put_wave(client, "w", admit_rate=1000, admit_burst=1000, max_active=5)
    for i in range(50):
        await join_ok(client, "w", f"r{i}")
    store = client.app[STORE]
    steps = await asyncio.gather(*(store.admit("w") for _ in range(100)))
    assert sum(len(s.admitted) for s in steps) == 5
    assert (await admin_view(client, "w"))["counts"]["active"] == 5


async def test_max_active_slot_freed_by_complete_and_by_ttl(backend: AdmissionBackend) -> None:
    await backend.put_wave("w", admit_rate=1000, max_active=2, session_ttl_s=30)
    tickets = await join_n(backend, "w", 6)
    assert await backend.admit("w") == [1, 2]
    assert await backend.admit("w") == []
    assert (await backend.counts("w")).active == 2  # at the cap, never above it
    assert await backend.poll("w", tickets[0]) == "admitted"
    for _ in range(2):  # idempotent: the second complete frees nothing more
        assert await backend.complete("w", tickets[0]) == 204
    assert await backend.admit("w") == [3]
    backend.clock.advance(31)  # sessions 2 and 3 expire
    assert await backend.admit("w") == [4, 5]
    counts = await backend.counts("w")
    assert counts.expired == 2 and counts.completed == 1
    assert 0 <= counts.active <= 2
    assert await backend.poll("w", tickets[1]) == "expired"
    # without max_active the same crowd takes more slots at once
    await backend.put_wave("unlimited", admit_rate=1000, max_active=0, session_ttl_s=30)
    await join_n(backend, "unlimited", 6)
    assert len(await backend.admit("unlimited")) == 6
    assert (await backend.counts("unlimited")).active == 6 > 2


async def test_quota_is_never_exceeded_and_then_the_wave_is_full(
    backend: AdmissionBackend,
) -> None:
    await backend.put_wave("w", admit_rate=1000, admit_burst=1000, quota=7)
    tickets = await join_n(backend, "w", 20)
    admitted = [len(await backend.admit("w")) for _ in range(30)]
    assert sum(admitted) == 7
    last = max(k for k, n in enumerate(admitted) if n)
    assert all(n == 0 for n in admitted[last + 1 :])  # admission stops exactly
    counts = await backend.counts("w")
    assert counts.state == "full" and counts.admitted == 7
    assert await backend.poll("w", tickets[10]) == "closed"
    late = await backend.join("w", "late")
    assert (late.status, late.error_code) == (409, "wave_full")


async def test_abandoned_tickets_cost_no_outflow_slot_or_quota(backend: AdmissionBackend) -> None:
    # sessions of 10 s: a short ETA, so every holder here is told to poll within a second
    await backend.put_wave(
        "w", admit_rate=1, admit_burst=1, max_active=1, quota=2, abandon_after_s=60,
        session_ttl_s=10,
    )  # fmt: skip
    gone = await join_n(backend, "w", 5, prefix="gone")
    backend.clock.advance(30)
    live = await join_n(backend, "w", 2, prefix="live")
    # the first five were last seen 70 s ago, past the deadline they were given (a poll
    # within 1.1 s, then 60 s of grace); the live ones 40 s ago
    backend.clock.advance(40)
    for ticket in live:
        await backend.poll("w", ticket)
    # one token, one slot: spent on the first live ticket, the five abandoned skipped for free
    assert await backend.admit("w") == [6]
    counts = await backend.counts("w")
    assert counts.abandoned == 5 and counts.active == 1
    assert await backend.poll("w", gone[0]) == "expired"
    assert await backend.poll("w", live[0]) == "admitted"
    await backend.complete("w", live[0])
    backend.clock.advance(1)
    assert await backend.admit("w") == [7]
    counts = await backend.counts("w")
    assert counts.admitted == 2 and counts.state == "full"


async def test_a_holder_gone_within_the_deadline_costs_a_slot_until_it_lapses(
    backend: AdmissionBackend,
) -> None:
    """The other side of guarantee 6: a ticket whose holder has gone without saying so is
    live until its deadline, so admission reaches it (a token and a slot spent on someone
    absent) and the slot is freed only when the unclaimed admission lapses."""
    await backend.put_wave("w", admit_rate=1, admit_burst=1, max_active=1, abandon_after_s=60)
    await join_n(backend, "w", 1, prefix="ghost")
    (present,) = await join_n(backend, "w", 1, prefix="present")
    backend.clock.advance(10)
    await backend.poll("w", present)
    assert await backend.admit("w") == [1]  # the ghost's deadline has not passed
    backend.clock.advance(1)
    assert await backend.admit("w") == []  # its slot is held
    backend.clock.advance(60)  # its deadline passes, never claimed: the admission lapses
    await backend.poll("w", present)
    assert await backend.admit("w") == [2]
    counts = await backend.counts("w")
    assert counts.admitted == 2 and counts.expired == 1 and counts.abandoned == 0


async def test_left_tickets_are_skipped_for_free(backend: AdmissionBackend) -> None:
    await backend.put_wave("w", admit_rate=1, admit_burst=1)
    tickets = await join_n(backend, "w", 3)
    for ticket in tickets[:2]:
        await backend.leave("w", ticket)
    # every admission goes to someone who is there
    assert await backend.admit("w") == [3]
    assert (await backend.counts("w")).left == 2
