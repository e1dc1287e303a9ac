"""Helpers shared by the queue service tests (plain functions; fixtures live in conftest)."""

from __future__ import annotations

from typing import Any, TypedDict

from aiohttp.test_utils import TestClient

from queue_service.admission import step_wave
from queue_service.http.appkeys import SERVICE, STORE
from queue_service.store import AdmitStep

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
T0 = 1_900_000_000.0  # "now" on the manual clock at the start of every test
ORIGIN = "http://127.0.0.1:9/daftar"
SAMPLE_CONFIG = """
[service]
port = 9001
admin_token = "from-file"
trusted_proxies = ["10.0.0.0/8"]

[rate_limits]
join_per_ip = {rate_per_s = 2, burst = 7}

[[waves]]
id = "gelombang-1"
title = "Gelombang 1"
opens_at = "2030-01-01T12:00:00+07:00"
closes_at = "2030-01-04T12:00:00+07:00"
admit_rate = 41.5
max_active = 22500
quota = 600000
prequeue_s = 3600
origin_url = "http://127.0.0.1:9000/daftar"
rate_limits = {status_per_ip = {burst = 5000}}
"""
"""A config file with every section: settings, rate limits and a wave."""


def wave_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "opens_at": T0 - 10,
        "closes_at": T0 + 3600,
        "admit_rate": 1000,
        "origin_url": ORIGIN,
        "abandon_after_s": 3600,
        "session_ttl_s": 600,
    }
    body.update(fields)
    return body


async def put_wave(client: TestClient, wave: str, **fields: Any) -> dict[str, Any]:
    response = await client.put(f"/admin/v1/waves/{wave}", json=wave_body(**fields), headers=ADMIN)
    body: dict[str, Any] = await response.json()
    assert response.status in (200, 201), body
    return body


async def join(
    client: TestClient,
    wave: str,
    registrant: str,
    *,
    ip: str | None = None,
    ticket: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """`ticket`: the caller's own ticket (proof of holding the place), sent as the header."""
    headers = {"X-Forwarded-For": ip} if ip else {}
    if ticket:
        headers["X-Queue-Ticket"] = ticket
    response = await client.post(
        f"/api/v1/waves/{wave}/join", json={"registrant": registrant}, headers=headers
    )
    return response.status, await response.json()


async def join_ok(client: TestClient, wave: str, registrant: str) -> dict[str, Any]:
    status, body = await join(client, wave, registrant)
    assert status in (200, 201), body
    return body


async def poll(client: TestClient, wave: str, ticket: str) -> tuple[int, dict[str, Any]]:
    response = await client.get(f"/api/v1/waves/{wave}/status", headers={"X-Queue-Ticket": ticket})
    return response.status, await response.json()


async def poll_ok(client: TestClient, wave: str, ticket: str) -> dict[str, Any]:
    status, body = await poll(client, wave, ticket)
    assert status == 200, body
    return body


async def admit(client: TestClient, wave: str) -> AdmitStep:
    """One admission step, exactly as the service's admission loop takes and records it."""
    return await step_wave(client.app[STORE], client.app[SERVICE].registry, wave)


async def admin_view(client: TestClient, wave: str) -> dict[str, Any]:
    response = await client.get(f"/admin/v1/waves/{wave}", headers=ADMIN)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


class NeverShed(TypedDict):
    max_lag_s: float
    max_inflight: int


NEVER_SHED = NeverShed(max_lag_s=30.0, max_inflight=100_000)
"""Settings for a service run in the test's own process: it shares its event loop with the test
(and a browser driver), so a loaded machine's lag or throughput must not make it shed requests
(shedding is the overload tests' subject, tests/e2e/test_guarantee_overload.py). Seen: the
Redis Cluster test's wave list answered 503 while the suite ran on three workers."""
