"""Guarantee 11, when Redis is rolled back in place: no ticket ever names two people.

A restore into a running server (DEBUG RELOAD of an older snapshot, FLUSHALL then RESTORE, a
restore tool rewriting one wave's keys) keeps Redis's run id, so nothing but the data says
that writes were lost. Two processes share the wave: one saw the lost joins, the other (fresh)
joins first after the rollback and is handed a lost number again, before anyone has noticed.
Every case: the earlier holder of that number is told `ticket_lost`, cannot give the new
holder's place up, and their admission token cannot end the new holder's session; the process
that saw the lost numbers notices the rollback at its next step and a new incarnation begins;
tickets from before the snapshot keep their places."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from aiohttp.test_utils import TestClient

from queue_service import metrics
from queue_service.app import create_app
from queue_service.clock import ManualClock
from queue_service.keys import WaveKeys
from queue_service.redis_server import EmbeddedRedis
from queue_service.settings import Settings
from queue_service.tokens import KeyRing
from tests.helpers.support import ADMIN, admin_view, admit, join_ok, poll, poll_ok, put_wave

pytestmark = pytest.mark.slow  # its own redis-server, restored three ways


Snapshot = Callable[[sync_redis.Redis], Any]
RollBack = Callable[[sync_redis.Redis, Any], None]


def dump_keys(redis: sync_redis.Redis, match: str) -> dict[bytes, tuple[int, bytes]]:
    return {
        key: (max(0, int(redis.pttl(key))), bytes(redis.dump(key)))  # type: ignore[arg-type]
        for key in redis.scan_iter(match=match)
    }


def restore_keys(redis: sync_redis.Redis, dumped: dict[bytes, tuple[int, bytes]]) -> None:
    for key, (ttl_ms, value) in dumped.items():
        redis.restore(key, ttl_ms, value, replace=True)


def debug_reload_snapshot(redis: sync_redis.Redis) -> None:
    redis.save()


def debug_reload(redis: sync_redis.Redis, _: None) -> None:
    redis.execute_command("DEBUG", "RELOAD", "NOSAVE")  # the older dump.rdb, same run id


def flushall_snapshot(redis: sync_redis.Redis) -> dict[bytes, tuple[int, bytes]]:
    return dump_keys(redis, "*")


def flushall_and_restore(redis: sync_redis.Redis, dumped: dict[bytes, tuple[int, bytes]]) -> None:
    redis.flushall()
    restore_keys(redis, dumped)


def wave_snapshot(redis: sync_redis.Redis) -> dict[bytes, tuple[int, bytes]]:
    return dump_keys(redis, WaveKeys("w").prefix + "*")


def restore_tool(redis: sync_redis.Redis, dumped: dict[bytes, tuple[int, bytes]]) -> None:
    """What a backup tool restoring one wave does: its keys replaced by the backup's."""
    for key in redis.scan_iter(match=WaveKeys("w").prefix + "*"):
        redis.delete(key)
    restore_keys(redis, dumped)


ROLLBACKS: dict[str, tuple[Snapshot, RollBack]] = {
    "debug reload of an older snapshot": (debug_reload_snapshot, debug_reload),
    "flushall then restore": (flushall_snapshot, flushall_and_restore),
    "a restore tool rewriting the wave's keys": (wave_snapshot, restore_tool),
}


@pytest.fixture(scope="module")
def restorable_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(
        tmp_path_factory.mktemp("restorable"),
        appendonly=False,
        extra_args=["--enable-debug-command", "local"],
    )
    with server:
        yield server


@pytest.fixture
async def two_processes(
    restorable_redis: EmbeddedRedis,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    clock: ManualClock,
    keyring: KeyRing,
) -> AsyncIterator[tuple[TestClient, TestClient]]:
    redis = sync_redis.Redis.from_url(restorable_redis.url)
    redis.flushall()
    redis.close()
    settings = make_settings(redis_url=restorable_redis.url)
    apps = [create_app(settings, clock=clock, keyring=keyring, run_admission=False) for _ in "ab"]
    first = await aiohttp_client(apps[0])
    second = await aiohttp_client(apps[1])
    yield first, second


def number(ticket: str) -> str:
    return ticket.split(".")[0]


async def assert_lost(client: TestClient, ticket: str) -> None:
    status, body = await poll(client, "w", ticket)
    assert status == 401 and body["error"]["code"] == "ticket_lost", body


@pytest.mark.parametrize("how", list(ROLLBACKS))
async def test_a_rollback_in_place_never_hands_one_ticket_to_two_people(
    how: str, two_processes: tuple[TestClient, TestClient], restorable_redis: EmbeddedRedis
) -> None:
    snapshot, roll_back = ROLLBACKS[how]
    seen_it, fresh_process = two_processes
    redis = sync_redis.Redis.from_url(restorable_redis.url)
    await put_wave(seen_it, "w", admit_rate=1000, max_active=1000)
    await seen_it.post("/admin/v1/waves/w/pause", headers=ADMIN)
    kept = [(await join_ok(seen_it, "w", f"kept{i}"))["ticket"] for i in range(5)]
    await admit(seen_it, "w")  # paused: nobody admitted, the step only counts
    saved = snapshot(redis)

    seen_it.session.cookie_jar.clear()
    lost = [(await join_ok(seen_it, "w", f"lost{i}"))["ticket"] for i in range(5)]
    await seen_it.post("/admin/v1/waves/w/resume", headers=ADMIN)
    await admit(seen_it, "w")  # everyone admitted; the process has seen ten tickets issued
    lost_token = (await poll_ok(seen_it, "w", lost[0]))["token"]
    await seen_it.post("/admin/v1/waves/w/pause", headers=ADMIN)
    rollbacks_before = metrics.state_rollbacks.labels("w")._value.get()

    roll_back(redis, saved)

    # The fresh process never saw the lost joins: it hands out a lost number again at once.
    newcomer = (await join_ok(fresh_process, "w", "newcomer"))["ticket"]
    assert number(newcomer) == number(lost[0])
    for client in (seen_it, fresh_process):
        await assert_lost(client, lost[0])  # the earlier holder is not shown the place
        assert (await poll_ok(client, "w", newcomer))["state"] == "paused"
    left = await seen_it.post("/api/v1/waves/w/leave", headers={"X-Queue-Ticket": lost[0]})
    assert left.status == 204  # idempotent, and it gave nobody's place up:
    assert (await poll_ok(fresh_process, "w", newcomer))["state"] == "paused"

    # The process that saw the lost numbers notices at its next step: a new incarnation.
    await admit(seen_it, "w")
    assert metrics.state_rollbacks.labels("w")._value.get() == rollbacks_before + 1
    after = (await join_ok(fresh_process, "w", "after"))["ticket"]
    assert number(after) == number(lost[1]) and after != lost[1]
    for ticket in lost:
        await assert_lost(seen_it, ticket)
        await assert_lost(fresh_process, ticket)
    for ticket in kept:
        assert (await poll_ok(fresh_process, "w", ticket))["state"] == "paused"

    # The newcomer is admitted; the lost admission's token cannot end their session.
    await seen_it.post("/admin/v1/waves/w/resume", headers=ADMIN)
    await admit(seen_it, "w")
    assert (await poll_ok(fresh_process, "w", newcomer))["state"] == "admitted"
    active = (await admin_view(seen_it, "w"))["counts"]["active"]
    response = await seen_it.post(
        "/api/v1/waves/w/complete", headers={"Authorization": f"Bearer {lost_token}"}
    )
    assert response.status == 204
    assert (await admin_view(seen_it, "w"))["counts"]["active"] == active
    assert (await poll_ok(fresh_process, "w", newcomer))["state"] == "admitted"
    redis.close()


def test_the_snapshot_helpers_cover_what_they_restore(tmp_path: Path) -> None:
    """The restore-tool case really restores only the wave (other keys keep their state)."""
    with EmbeddedRedis(tmp_path / "r", appendonly=False) as server:
        redis = sync_redis.Redis.from_url(server.url)
        redis.set(WaveKeys("w").cfg, "old")
        redis.set("glb:other", "old")
        saved = wave_snapshot(redis)
        redis.set(WaveKeys("w").cfg, "new")
        redis.set(WaveKeys("w").ctl, "new")
        redis.set("glb:other", "new")
        restore_tool(redis, saved)
        assert redis.get(WaveKeys("w").cfg) == b"old"
        assert redis.get(WaveKeys("w").ctl) is None
        assert redis.get("glb:other") == b"new"
        redis.close()
