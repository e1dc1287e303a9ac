"""Guarantee 9: Redis down gives 503 + Retry-After quickly (no hang) and the service recovers by
itself; bad input gets a clear 4xx JSON error, never a 500; oversized bodies are refused before
they are read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from queue_service.app import create_app
from queue_service.redis_server import EmbeddedRedis
from queue_service.settings import Settings
from tests.helpers.support import ADMIN, join_ok, put_wave

BOUND_S = 3.0  # a request must be answered within this while Redis is down
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def own_redis(tmp_path: Path, redis_executable: str) -> AsyncIterator[EmbeddedRedis]:
    # a sync per write: on `everysec` a kill right after a join may lose it while a slow disk
    # still syncs the second before (tests/e2e/test_guarantee_durability.py)
    server = EmbeddedRedis(
        tmp_path / "own-redis", appendonly=True, appendfsync="always", executable=redis_executable
    )
    server.start()
    yield server
    server.stop()


async def test_redis_down_gives_503_quickly_then_recovers(
    own_redis: EmbeddedRedis,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(redis_url=own_redis.url, redis_timeout_s=0.5))
    client = await aiohttp_client(app)
    now = time.time()
    await put_wave(client, "w", opens_at=now - 5, closes_at=now + 600)
    ticket = (await join_ok(client, "w", "before"))["ticket"]

    own_redis.kill()
    for method, path, kwargs in (
        ("POST", "/api/v1/waves/w/join", {"json": {"registrant": "during"}}),
        ("GET", "/api/v1/waves/w/status", {"headers": {"X-Queue-Ticket": ticket}}),
        ("GET", "/readyz", {}),
    ):
        started = time.monotonic()
        response = await client.request(method, path, **kwargs)
        elapsed = time.monotonic() - started
        assert response.status == 503, (path, await response.text())
        assert elapsed < BOUND_S, (path, elapsed)
        assert int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["error"]["code"] == "store_unavailable"
    assert (await client.get("/healthz")).status == 200  # alive, just not ready

    own_redis.start()  # same port, same AOF: the earlier join is still there
    deadline = time.monotonic() + 10
    while (await client.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, "service did not recover by itself"
        await asyncio.sleep(0.2)
    response = await client.get("/api/v1/waves/w/status", headers={"X-Queue-Ticket": ticket})
    assert response.status == 200 and (await response.json())["position"] == 1
    assert (await join_ok(client, "w", "after"))["position"] == 2


BAD_REQUESTS: list[tuple[str, str, dict[str, object], int, str]] = [
    ("POST", "/api/v1/waves/w/join", {"data": b"{not json", "headers": JSON}, 400, "invalid_json"),
    ("POST", "/api/v1/waves/w/join", {"data": b"", "headers": JSON}, 400, "invalid_json"),
    (
        "POST",
        "/api/v1/waves/w/join",
        {"data": b'{"registrant": "a"}'},
        415,
        "unsupported_media_type",
    ),
    (
        "POST",
        "/api/v1/waves/w/join",
        {"data": b'{"registrant": "a"}', "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ("POST", "/api/v1/waves/w/join", {"json": [1, 2]}, 400, "invalid_json"),
    ("POST", "/api/v1/waves/w/join", {"json": {}}, 400, "invalid_registrant"),
    ("POST", "/api/v1/waves/w/join", {"json": {"registrant": 42}}, 400, "invalid_registrant"),
    ("POST", "/api/v1/waves/w/join", {"json": {"registrant": ""}}, 400, "invalid_registrant"),
    (
        "POST",
        "/api/v1/waves/w/join",
        {"json": {"registrant": "x" * 129}},
        400,
        "invalid_registrant",
    ),
    ("POST", "/api/v1/waves/w/join", {"json": {"registrant": "a\x00b"}}, 400, "invalid_registrant"),
    ("POST", "/api/v1/waves/w/join", {"data": b"\xff\xfe", "headers": JSON}, 400, "invalid_json"),
    ("POST", "/api/v1/waves/NOPE!/join", {"json": {"registrant": "a"}}, 400, "invalid_wave_id"),
    ("POST", "/api/v1/waves/missing/join", {"json": {"registrant": "a"}}, 404, "unknown_wave"),
    ("GET", "/api/v1/waves/w/status", {}, 401, "missing_ticket"),
    (
        "GET",
        "/api/v1/waves/w/status",
        {"headers": {"X-Queue-Ticket": "garbage"}},
        401,
        "invalid_ticket",
    ),
    (
        "GET",
        "/api/v1/waves/w/status",
        {"headers": {"X-Queue-Ticket": "1.AAAAAAAAAAAAAAAA"}},
        401,
        "invalid_ticket",
    ),
    (
        "GET",
        "/api/v1/waves/w/status",
        {"headers": {"X-Queue-Ticket": "-1.x"}},
        401,
        "invalid_ticket",
    ),
    ("GET", "/api/v1/waves/w/status", {"params": {"ticket": "9" * 300}}, 401, "invalid_ticket"),
    ("POST", "/api/v1/waves/w/leave", {}, 401, "missing_ticket"),
    ("POST", "/api/v1/waves/w/complete", {}, 401, "missing_token"),
    (
        "POST",
        "/api/v1/waves/w/complete",
        {"headers": {"Authorization": "Basic abc"}},
        401,
        "missing_token",
    ),
    (
        "POST",
        "/api/v1/waves/w/complete",
        {"headers": {"Authorization": "Bearer x.y.z"}},
        401,
        "invalid_token",
    ),
    ("GET", "/api/v1/waves/missing", {}, 404, "unknown_wave"),
    ("GET", "/no/such/route", {}, 404, "not_found"),
    ("DELETE", "/api/v1/waves/w/join", {}, 405, "method_not_allowed"),
    ("GET", "/admin/v1/waves", {}, 401, "invalid_admin_token"),
    (
        "GET",
        "/admin/v1/waves",
        {"headers": {"Authorization": "Bearer wrong"}},
        401,
        "invalid_admin_token",
    ),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"admit_rate": -1}},
        400,
        "invalid_wave",
    ),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"admit_rate": "fast"}},
        400,
        "invalid_wave",
    ),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"colour": "red"}},
        400,
        "invalid_wave",
    ),
    ("PUT", "/admin/v1/waves/w", {"headers": ADMIN, "json": {"closes_at": 1}}, 400, "invalid_wave"),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"opens_at": "tomorrow"}},
        400,
        "invalid_wave",
    ),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"opens_at": "2026-01-01T00:00"}},
        400,
        "invalid_wave",
    ),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"origin_url": "javascript:x"}},
        400,
        "invalid_wave",
    ),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"max_active": 1.5}},
        400,
        "invalid_wave",
    ),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"rate_limits": {"x": 1}}},
        400,
        "invalid_wave",
    ),
    ("PUT", "/admin/v1/waves/w", {"headers": ADMIN | JSON, "data": b"NaN"}, 400, "invalid_json"),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"admit_burst": 0.5}},
        400,
        "invalid_wave",
    ),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"rate_limits": {"enabled": "false"}}},
        400,
        "invalid_wave",
    ),
    (
        "PUT",
        "/admin/v1/waves/w",
        {"headers": ADMIN, "json": {"rate_limits": {"join_per_ip": {"burst": 1.5}}}},
        400,
        "invalid_wave",
    ),
    ("POST", "/admin/v1/waves/missing/pause", {"headers": ADMIN}, 404, "unknown_wave"),
    ("POST", "/admin/v1/waves/w/explode", {"headers": ADMIN}, 404, "not_found"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), BAD_REQUESTS)
async def test_bad_input_gets_a_clear_4xx_json_error(
    client: TestClient, method: str, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    await put_wave(client, "w")
    response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    body = await response.json()
    assert response.status == status, body
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def test_a_ticket_of_another_wave_is_refused(client: TestClient) -> None:
    await put_wave(client, "w")
    await put_wave(client, "v")
    ticket = (await join_ok(client, "v", "a"))["ticket"]
    response = await client.get("/api/v1/waves/w/status", headers={"X-Queue-Ticket": ticket})
    assert response.status == 401


async def test_oversized_body_is_refused_before_it_is_read(client: TestClient) -> None:
    await put_wave(client, "w")
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /api/v1/waves/w/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 50000000\r\n\r\n{"registrant": '
    )
    await writer.drain()
    # the 50 MB never arrive: the answer must come from the headers alone
    status_line = await asyncio.wait_for(reader.readline(), timeout=3)
    assert b" 413 " in status_line
    writer.close()


async def test_oversized_chunked_body_is_refused(client: TestClient) -> None:
    await put_wave(client, "w")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    response = await client.post("/api/v1/waves/w/join", data=chunks(), headers=JSON)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"


async def test_admin_api_is_disabled_without_a_token(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
) -> None:
    client = await aiohttp_client(create_app(make_settings(admin_token=None)))
    for token in ("", "None", "null"):
        response = await client.get("/admin/v1/waves", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "admin_disabled"
