"""Wave states through the public and admin APIs: scheduled, prequeue, open, paused, closed;
what a registrant and an SRE see in each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from queue_service.app import create_app
from queue_service.clock import ManualClock
from queue_service.pacing import MIN_POLL_MS, POLL_SHARE
from queue_service.settings import Settings
from queue_service.tokens import KeyRing
from tests.helpers.support import ADMIN, T0, admin_view, admit, join, join_ok, poll_ok, put_wave


async def test_a_wave_goes_through_its_states(client: TestClient, clock: ManualClock) -> None:
    await put_wave(client, "w", opens_at=T0 + 600, prequeue_s=300, closes_at=T0 + 3600)
    assert (await admin_view(client, "w"))["state"] == "scheduled"
    status, body = await join(client, "w", "too-early")
    assert status == 409 and body["error"]["code"] == "wave_not_open_yet"

    clock.set(T0 + 400)
    assert (await admin_view(client, "w"))["state"] == "prequeue"
    early = await join_ok(client, "w", "early")
    assert early["state"] == "prequeue" and early["eta_s"] == 200

    clock.set(T0 + 601)
    view = await admin_view(client, "w")
    assert view["state"] == "open" and view["counts"]["waiting"] == 1

    await client.post("/admin/v1/waves/w/pause", headers=ADMIN)
    assert (await admit(client, "w")).admitted == []
    assert (await admin_view(client, "w"))["state"] == "paused"
    assert (await join_ok(client, "w", "during-pause"))["position"] == 2  # still joinable

    await client.post("/admin/v1/waves/w/resume", headers=ADMIN)
    assert [a.seq for a in (await admit(client, "w")).admitted] == [1, 2]
    assert (await poll_ok(client, "w", early["ticket"]))["state"] == "admitted"

    waiting = await join_ok(client, "w", "late")
    await client.post("/admin/v1/waves/w/close", headers=ADMIN)
    assert (await poll_ok(client, "w", waiting["ticket"]))["state"] == "closed"
    status, body = await join(client, "w", "after-close")
    assert status == 409 and body["error"]["code"] == "wave_closed"
    response = await client.post("/admin/v1/waves/w/resume", headers=ADMIN)
    assert response.status == 409

    clock.set(T0 + 3601)
    assert (await admin_view(client, "w"))["state"] == "closed"


async def test_not_yet_open_says_when_to_come_back(client: TestClient) -> None:
    await put_wave(client, "w", opens_at=T0 + 600, prequeue_s=60)
    response = await client.post("/api/v1/waves/w/join", json={"registrant": "a"})
    assert response.status == 409
    assert int(response.headers["Retry-After"]) == 540


async def test_public_wave_info(client: TestClient) -> None:
    await put_wave(client, "w", admit_rate=2, title="Gelombang 1")
    for i in range(10):
        await join_ok(client, "w", f"r{i}")
    await admit(client, "w")
    info = await (await client.get("/api/v1/waves/w")).json()
    assert info["wave"] == "w" and info["state"] == "open" and info["title"] == "Gelombang 1"
    assert info["admit_rate"] == 2.0
    assert info["waiting"] == 10 - 2  # the bucket starts with admit_burst = 2 tokens
    assert info["eta_new_arrival_s"] == 4  # 8 ahead at 2/s


async def test_status_poll_interval_grows_with_position(client: TestClient) -> None:
    await put_wave(client, "w", admit_rate=0.5, admit_burst=1)
    tickets = [(await join_ok(client, "w", f"r{i}"))["ticket"] for i in range(400)]
    near = await poll_ok(client, "w", tickets[1])
    far = await poll_ok(client, "w", tickets[-1])
    assert near["poll_after_ms"] == MIN_POLL_MS
    assert far["eta_s"] == 399 * 2 and far["ahead"] == 399
    # a twentieth of the wait, with no cap from abandon_after_s any more
    assert far["poll_after_ms"] == int(399 * 2 * 1000 * POLL_SHARE) > 30_000


async def test_admin_update_changes_the_rate_live_and_is_logged(
    client: TestClient, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await put_wave(client, "w", admit_rate=1, admit_burst=1)
    for i in range(30):
        await join_ok(client, "w", f"r{i}")
    assert len((await admit(client, "w")).admitted) == 1
    with caplog.at_level(logging.INFO, logger="queue_service.admin"):
        response = await client.put(
            "/admin/v1/waves/w", json={"admit_rate": 10, "admit_burst": 10}, headers=ADMIN
        )
    assert response.status == 200
    body = await response.json()
    assert body["wave"]["admit_rate"] == 10 and body["wave"]["origin_url"]  # partial update
    record = next(r for r in caplog.records if getattr(r, "admin_action", "") == "update")
    assert record.changes["admit_rate"] == {"from": 1.0, "to": 10.0}  # type: ignore[attr-defined]
    assert record.actor.startswith("admin@")  # type: ignore[attr-defined]
    clock.advance(1)
    assert len((await admit(client, "w")).admitted) == 10
    listing = await (await client.get("/admin/v1/waves", headers=ADMIN)).json()
    assert [w["wave"]["id"] for w in listing["waves"]] == ["w"]


async def test_jwks_and_health(client: TestClient) -> None:
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["kty"] == "OKP" and jwks["keys"][0]["alg"] == "EdDSA"
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    response = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"


async def test_waiting_page_is_served_compressed_for_a_known_wave_only(
    client: TestClient,
) -> None:
    await put_wave(client, "w")
    response = await client.get("/w/w", headers={"Accept-Encoding": "gzip"})
    assert response.status == 200 and response.headers["Content-Encoding"] == "gzip"
    assert 'const WAVE = "w";' in await response.text()
    assert (await client.get("/w/unknown")).status == 404


async def test_unknown_methods_do_not_create_metric_series(client: TestClient) -> None:
    response = await client.request("PROPFIND", "/healthz")
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    exposition = await (await client.get("/metrics")).text()
    assert 'method="other"' in exposition and "PROPFIND" not in exposition


async def test_a_join_body_sent_in_chunks_is_read_whole(client: TestClient) -> None:
    """Bodies without Content-Length (chunked) take the reading path that enforces the size
    limit as it goes; a small one in several pieces is still a valid join."""
    await put_wave(client, "w")

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b'{"regis', b'trant": "chunk', b'ed-1"}'):
            await asyncio.sleep(0.01)
            yield piece

    response = await client.post(
        "/api/v1/waves/w/join", data=pieces(), headers={"Content-Type": "application/json"}
    )
    assert response.status == 201, await response.text()
    again = await join_ok(client, "w", "chunked-1")
    assert again["ticket"] == (await response.json())["ticket"]


async def test_the_ticket_cookie_is_secure_when_tls_ended_at_a_trusted_proxy(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    clock: ManualClock,
    keyring: KeyRing,
) -> None:
    for trusted, proto, secure in (
        (("127.0.0.1/32",), "https", True),  # TLS ended at our load balancer
        (("127.0.0.1/32",), "http", False),
        ((), "https", False),  # anyone can send the header: only a trusted proxy is believed
    ):
        app = create_app(
            make_settings(trusted_proxies=trusted), clock=clock, keyring=keyring,
            run_admission=False,
        )  # fmt: skip
        client = await aiohttp_client(app)
        await put_wave(client, "w")
        response = await client.post(
            "/api/v1/waves/w/join",
            json={"registrant": f"r-{proto}-{secure}"},
            headers={"X-Forwarded-Proto": proto},
        )
        cookie = response.headers["Set-Cookie"]
        assert ("; Secure" in cookie) is secure, (trusted, proto, cookie)
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


async def test_an_opened_wave_cannot_be_postponed_and_is_told_how_to_hold_admission(
    client: TestClient, clock: ManualClock
) -> None:
    """A wave opens once (its pre-queue is drawn and frozen then). Moving opens_at of an opened
    wave into the future used to be accepted silently: the wave kept admitting while showing
    a future opening. Now it is refused with what to do instead; a wave that has not opened
    yet can still be postponed."""
    await put_wave(client, "w")  # opened 10 s ago
    await join_ok(client, "w", "a")
    before = await admin_view(client, "w")
    moved = await client.put("/admin/v1/waves/w", json={"opens_at": T0 + 600}, headers=ADMIN)
    assert moved.status == 409
    error = (await moved.json())["error"]
    assert error["code"] == "wave_already_opened"
    assert "gelombang wave pause w" in error["message"] and "new wave" in error["message"]
    after = await admin_view(client, "w")
    assert after["state"] == "open" and after["wave"] == before["wave"]  # nothing changed
    # other changes, and an opening moved within the past, are no postponement
    await client.put("/admin/v1/waves/w", json={"opens_at": T0 - 5}, headers=ADMIN)
    assert (await admin_view(client, "w"))["wave"]["opens_at"].startswith("2030-03-17T17:46:35")

    await put_wave(client, "later", opens_at=T0 + 600, closes_at=T0 + 7200)
    postponed = await client.put(
        "/admin/v1/waves/later", json={"opens_at": T0 + 1200}, headers=ADMIN
    )
    assert postponed.status == 200 and (await postponed.json())["state"] == "scheduled"


async def test_a_new_wave_missing_fields_is_told_all_of_them(client: TestClient) -> None:
    response = await client.put("/admin/v1/waves/new", json={"admit_rate": 5}, headers=ADMIN)
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert message.endswith("missing: opens_at, closes_at and origin_url")
