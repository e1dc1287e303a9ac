"""Guarantee 10: per-IP and per-registrant limits on join and status (GCRA in the same Lua
call), 429 + Retry-After + RateLimit headers, and bots that ignore Retry-After gain nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from queue_service.app import create_app
from queue_service.clock import ManualClock
from queue_service.http.appkeys import SERVICE, STORE
from queue_service.ratelimit import RateLimitRules, Rule
from queue_service.registry import UNLISTED_LOOKUPS
from queue_service.settings import Settings
from queue_service.tokens import KeyRing
from tests.helpers.support import ADMIN, admit, join, join_ok, poll, put_wave

STRICT = RateLimitRules(
    enabled=True,
    join_per_ip=Rule(rate_per_s=1, burst=3),
    join_per_registrant=Rule(rate_per_s=0.2, burst=2),
    status_per_ip=Rule(rate_per_s=10, burst=50),
    status_per_ticket=Rule(rate_per_s=0.5, burst=3),
)


@pytest.fixture
async def limited(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    clock: ManualClock,
    keyring: KeyRing,
) -> TestClient:
    settings = make_settings(rate_limits=STRICT, trusted_proxies=("127.0.0.1/32",))
    app = create_app(settings, clock=clock, keyring=keyring, run_admission=False)
    return await aiohttp_client(app)


def assert_limited(status: int, body: dict[str, object]) -> None:
    assert status == 429, body
    assert body["error"]["code"] == "rate_limited"  # type: ignore[index]


async def test_join_is_limited_per_ip_with_retry_after_and_ratelimit_headers(
    limited: TestClient, clock: ManualClock
) -> None:
    await put_wave(limited, "w")
    for i in range(3):
        assert (await join(limited, "w", f"r{i}", ip="203.0.113.7"))[0] == 201
    response = await limited.post(
        "/api/v1/waves/w/join",
        json={"registrant": "r9"},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert_limited(response.status, await response.json())
    assert response.headers["Retry-After"] == "1"
    assert response.headers["RateLimit-Limit"] == "3"
    assert response.headers["RateLimit-Remaining"] == "0"
    assert '"join_per_ip"' in response.headers["RateLimit-Policy"]
    # another address is not affected; the limited one recovers after Retry-After
    assert (await join(limited, "w", "r9", ip="198.51.100.1"))[0] == 201
    clock.advance(1)
    assert (await join(limited, "w", "r10", ip="203.0.113.7"))[0] == 201


async def test_join_is_limited_per_registrant_across_addresses(
    limited: TestClient, clock: ManualClock
) -> None:
    """The holder's own joins (with the ticket, their proof) from many addresses share one
    per-registrant allowance: burst 2, then 429."""
    await put_wave(limited, "w")
    status, body = await join(limited, "w", "joki", ip="10.0.0.1")
    assert status == 201
    ticket = body["ticket"]
    limited.session.cookie_jar.clear()
    for ip in ("10.0.0.2", "10.0.0.3"):
        assert (await join(limited, "w", "joki", ip=ip, ticket=ticket))[0] == 200
    status, body = await join(limited, "w", "joki", ip="10.0.0.4", ticket=ticket)
    assert_limited(status, body)


async def test_a_stranger_spending_joins_on_a_leaked_id_cannot_lock_the_holder_out(
    limited: TestClient, clock: ManualClock
) -> None:
    """Joins without proof are charged to their address only: however many a stranger sends
    for somebody's id (from however many addresses), the holder's own re-join with their
    ticket is not refused, and the stranger learns nothing of the place."""
    await put_wave(limited, "w")
    status, body = await join(limited, "w", "3171011508900001", ip="10.0.0.1")
    assert status == 201
    ticket = body["ticket"]
    limited.session.cookie_jar.clear()
    for i in range(20):
        status, body = await join(limited, "w", "3171011508900001", ip=f"198.51.100.{i}")
        assert status == 409 and body["error"]["code"] == "already_queued"
        assert "ticket" not in body and "position" not in body
    status, body = await join(limited, "w", "3171011508900001", ip="10.0.0.1", ticket=ticket)
    assert status == 200 and body["ticket"] == ticket


async def test_forwarded_for_is_ignored_from_untrusted_peers(
    client: TestClient,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    clock: ManualClock,
    keyring: KeyRing,
) -> None:
    app = create_app(
        make_settings(rate_limits=STRICT), clock=clock, keyring=keyring, run_admission=False
    )
    untrusting = await aiohttp_client(app)
    await put_wave(untrusting, "w")
    statuses = [(await join(untrusting, "w", f"r{i}", ip=f"10.0.0.{i}"))[0] for i in range(4)]
    assert statuses == [201, 201, 201, 429]  # spoofed addresses did not create new clients


async def test_status_is_limited_per_ticket_and_bots_gain_nothing(
    limited: TestClient, clock: ManualClock
) -> None:
    await put_wave(limited, "w", admit_rate=1, admit_burst=1)
    human = (await join_ok(limited, "w", "human"))["ticket"]
    clock.advance(1)
    bot = (await join_ok(limited, "w", "bot"))["ticket"]
    statuses = [(await poll(limited, "w", bot))[0] for _ in range(60)]
    assert statuses[:3] == [200, 200, 200] and set(statuses[3:]) == {429}
    status, human_view = await poll(limited, "w", human)
    assert status == 200 and human_view["position"] == 1
    # hammering neither moved the bot forward nor pushed the human back
    assert [a.seq for a in (await admit(limited, "w")).admitted] == [1]
    clock.advance(10)
    assert (await poll(limited, "w", human))[1]["state"] == "admitted"
    bot_view = (await poll(limited, "w", bot))[1]
    assert bot_view["state"] == "waiting" and bot_view["position"] == 1


def test_rate_limits_can_be_overridden_per_wave() -> None:
    base = RateLimitRules()
    override = RateLimitRules.from_mapping({"join_per_ip": {"burst": 500}}, base)
    assert override.join_per_ip == Rule(rate_per_s=base.join_per_ip.rate_per_s, burst=500)
    assert override.status_per_ticket == base.status_per_ticket
    with pytest.raises(ValueError):
        RateLimitRules.from_mapping({"join_per_ip": {"rate_per_s": 0}})


async def test_joins_to_waves_that_do_not_exist_cost_redis_nothing_and_are_limited(
    limited: TestClient,
) -> None:
    """A client inventing wave ids: answered from the process's list of waves (a lookup in
    Redis at most UNLISTED_LOOKUPS a second, for a wave created a moment ago elsewhere), and
    limited like any joins from its address."""
    registry = limited.app[SERVICE].registry
    store = limited.app[STORE]
    lookups = 0
    original = store.get_wave

    async def counted(wave: str) -> object:
        nonlocal lookups
        lookups += 1
        return await original(wave)

    store.get_wave = counted  # type: ignore[method-assign]
    started = time.monotonic()
    registry.known_ids(["w"], started)
    codes = []
    for i in range(100):
        status, body = await join(limited, f"made-up-{i}", "x", ip="203.0.113.9")
        codes.append((status, body["error"]["code"]))
    assert codes[:3] == [(404, "unknown_wave")] * 3
    assert set(codes[3:]) == {(429, "rate_limited")}
    elapsed = time.monotonic() - started
    assert lookups <= UNLISTED_LOOKUPS.burst + UNLISTED_LOOKUPS.rate_per_s * elapsed
    assert (await join(limited, "made-up-0", "x", ip="198.51.100.2"))[0] == 404  # others: 404


async def test_wrong_admin_tokens_are_logged_and_an_address_that_keeps_guessing_is_stopped(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="queue_service.http.admin")
    statuses = []
    for i in range(15):
        response = await client.get(
            "/admin/v1/waves", headers={"Authorization": f"Bearer guess-{i}-secret"}
        )
        statuses.append(response.status)
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429] * 5
    refused = [r for r in caplog.records if "admin token refused" in r.getMessage()]
    assert len(refused) == 10
    assert all("127.0.0.1" in r.getMessage() and "secret" not in r.getMessage() for r in refused)
    # the right token from that address waits too; a guess never reaches the comparison
    right = await client.get("/admin/v1/waves", headers=ADMIN)
    assert right.status == 429 and "Retry-After" in right.headers
