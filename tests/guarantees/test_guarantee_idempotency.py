"""Guarantee 5: one place per registrant; a refresh never loses or worsens a place; position
only decreases."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from queue_service.clock import ManualClock
from tests.helpers.support import admit, join, join_ok, poll_ok, put_wave


async def test_same_registrant_gets_the_same_ticket_and_place(client: TestClient) -> None:
    await put_wave(client, "w", admit_rate=1, admit_burst=1)
    await join_ok(client, "w", "someone-else")
    status, first = await join(client, "w", "3171234567890001")
    assert status == 201
    status, again = await join(client, "w", "3171234567890001")
    assert status == 200
    assert again["ticket"] == first["ticket"] and again["position"] == first["position"] == 2


async def test_concurrent_joins_of_one_registrant_hold_one_place(client: TestClient) -> None:
    await put_wave(client, "w", admit_rate=1, admit_burst=1)
    results = await asyncio.gather(*(join(client, "w", "same-person") for _ in range(40)))
    statuses = sorted(status for status, _ in results)
    # one place; the other 39 came with no proof of holding it (no ticket yet), so they are
    # refused rather than handed the place
    assert statuses == [201] + [409] * 39
    assert {body["error"]["code"] for status, body in results if status == 409} == {
        "already_queued"
    }
    assert len({body["ticket"] for status, body in results if status == 201}) == 1
    view = await client.get("/admin/v1/waves/w", headers={"Authorization": "Bearer x"})
    assert view.status == 401
    assert (await admit(client, "w")).counts.seq == 1


async def test_cookie_keeps_the_place_across_refreshes(client: TestClient) -> None:
    await put_wave(client, "w", admit_rate=1, admit_burst=1)
    await join_ok(client, "w", "a")
    joined = await join_ok(client, "w", "b")
    assert joined["position"] == 2
    # the test client keeps cookies like a browser: status needs no explicit ticket
    response = await client.get("/api/v1/waves/w/status")
    assert response.status == 200
    assert (await response.json())["position"] == 2
    cookie = response.cookies.get("gelombang_ticket") or client.session.cookie_jar
    assert cookie


async def test_position_only_decreases_and_rejoin_never_worsens_it(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, "w", admit_rate=1, admit_burst=1)
    for i in range(10):
        await join_ok(client, "w", f"ahead{i}")
    mine = await join_ok(client, "w", "me")
    positions = [mine["position"]]
    for step in range(12):
        if step % 2 == 0:
            await admit(client, "w")
            clock.advance(1)
        rejoin = await join_ok(client, "w", "me")
        assert rejoin["ticket"] == mine["ticket"]
        view = await poll_ok(client, "w", mine["ticket"])
        positions += [rejoin["position"] or 0, view["position"] or 0]
        if view["state"] == "admitted":
            break
    waiting = [p for p in positions if p]
    assert waiting == sorted(waiting, reverse=True)
    assert waiting[0] == 11 and waiting[-1] < 11


async def test_a_registrant_who_left_may_join_again_at_the_back(client: TestClient) -> None:
    await put_wave(client, "w", admit_rate=1, admit_burst=1)
    first = await join_ok(client, "w", "me")
    await join_ok(client, "w", "other")
    response = await client.post(
        "/api/v1/waves/w/leave", headers={"X-Queue-Ticket": first["ticket"]}
    )
    assert response.status == 204
    status, again = await join(client, "w", "me")
    assert status == 201 and again["ticket"] != first["ticket"] and again["position"] == 3


async def test_an_admitted_registrant_joining_again_gets_the_same_admission(
    client: TestClient,
) -> None:
    await put_wave(client, "w", admit_rate=1000)
    first = await join_ok(client, "w", "me")
    await admit(client, "w")
    polled = await poll_ok(client, "w", first["ticket"])
    again = await join_ok(client, "w", "me")
    assert again["state"] == "admitted" and again["ticket"] == first["ticket"]
    assert again["token"] == polled["token"]  # same subject, same admission, same token
