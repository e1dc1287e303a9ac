"""The public status board (issue 25): every wave's state, people waiting, admitted so far,
quota left, the current pace and the next opening, as JSON and as a page in Indonesian and
English; cacheable, built at most once per interval whatever the traffic; no personal data."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from aiohttp.test_utils import TestClient

from queue_service.clock import ManualClock
from queue_service.http import status_page
from queue_service.http.appkeys import STORE
from queue_service.http.status_page import STATUS_CACHE_S
from queue_service.store import Store
from tests.helpers.support import T0, admit, join_ok, put_wave


async def board_waves(client: TestClient) -> list[dict[str, object]]:
    response = await client.get("/api/v1/status")
    assert response.status == 200
    assert response.headers["Cache-Control"] == f"public, max-age={int(STATUS_CACHE_S)}"
    body = await response.json()
    return list(body["waves"])


async def test_the_board_shows_every_wave_and_the_next_opening(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, "buka", title="Gelombang 70", admit_rate=2, admit_burst=2, quota=10)
    await put_wave(client, "nanti", opens_at=T0 + 3600, closes_at=T0 + 7200)
    for i in range(5):
        await join_ok(client, "buka", f"pendaftar-{i}")
    await admit(client, "buka")
    response = await client.get("/api/v1/status")
    body = await response.json()
    assert body["next_opening"]["wave"] == "nanti"
    rows = {row["wave"]: row for row in body["waves"]}
    assert [row["wave"] for row in body["waves"]] == ["buka", "nanti"]  # open first
    open_row = rows["buka"]
    assert (open_row["state"], open_row["waiting"], open_row["admitted"]) == ("open", 3, 2)
    assert (open_row["quota"], open_row["quota_left"]) == (10, 8)
    assert open_row["pace_per_min"] is None and open_row["admit_rate"] == 2  # one look so far
    assert rows["nanti"]["state"] == "scheduled" and rows["nanti"]["quota_left"] is None
    assert "pendaftar" not in await response.text()

    page = await client.get("/status")
    assert page.status == 200 and page.headers["Content-Language"] == "id"
    text = await page.text()
    assert "Status antrean" in text and "Gelombang 70" in text and "Pembukaan berikutnya" in text
    english = await client.get("/status?lang=en")
    assert "Queue status" in await english.text() and "Next opening" in await english.text()
    cached = await client.get("/status?lang=en", headers={"If-None-Match": english.headers["ETag"]})
    assert cached.status == 304
    bad = await client.get("/status?lang=fr")
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_query"


async def test_a_crowd_of_readers_costs_one_build_per_interval(client: TestClient) -> None:
    await put_wave(client, "buka")
    store = client.app[STORE]
    with mock.patch.object(Store, "wave_ids", autospec=True, side_effect=Store.wave_ids) as ids:
        answers = await asyncio.gather(*(client.get("/api/v1/status") for _ in range(50)))
        answers += await asyncio.gather(*(client.get("/status") for _ in range(50)))
    assert {a.status for a in answers} == {200}
    assert ids.call_count == 1
    assert store is client.app[STORE]


async def test_the_pace_is_what_was_admitted_lately(
    client: TestClient, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await put_wave(client, "buka", admit_rate=1, admit_burst=1)
    for i in range(20):
        await join_ok(client, "buka", f"pendaftar-{i}")
    seconds = [1000.0]
    monkeypatch.setattr(status_page.time, "monotonic", lambda: seconds[0])
    await board_waves(client)
    for _ in range(6):  # six seconds, one admitted each
        clock.advance(1)
        await admit(client, "buka")
    seconds[0] += 6
    row = (await board_waves(client))[0]
    assert row["admitted"] == 6 and row["pace_per_min"] == 60.0
