"""One wave's ceiling on one Redis master: how much Redis CPU each of the service's script calls
costs, driven straight through `Store` (no HTTP), and so how many calls one Redis core can take.

A wave's keys share one hash slot, so one wave is bounded by one master whatever the number of
queue processes; a cluster spreads many waves over masters. Redis runs one script at a time on
one core: calls/s at saturation = 1 / (Redis CPU per call). The driver may not saturate Redis
on a 2-core machine, so the ceiling is computed from Redis's own CPU counter (INFO cpu) over
the calls it served, not from the driver's rate.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from loadtests.bench.cluster import local_cluster
from loadtests.bench.report import Row
from loadtests.bench.seed import ticket_stamps
from queue_service.keys import REGISTRANT_BUCKETS, WaveKeys
from queue_service.ratelimit import RateLimitRules
from queue_service.redis_client import connect_redis
from queue_service.settings import Settings
from queue_service.store import HighWater, JoinRequest, StatusRequest, Store
from queue_service.tickets import new_stamps
from queue_service.waves import parse_wave

BATCH = 32
"""Requests per join or status call: what the coalescer sends under load (RESULTS.md)."""
DEADLINES_PER_FLUSH = 500
"""Deadlines per seen-buffer flush: one process's polls of half a second at 1,000 polls/s."""
CONCURRENCY = 4
"""Calls in flight at once (as several queue processes would send)."""


@dataclass(frozen=True)
class Ceiling:
    op: str
    items_per_call: int
    calls_per_s: float
    """What the driver achieved."""
    redis_cpu_us_per_call: float

    @property
    def ceiling_calls_per_s(self) -> float:
        return 1e6 / self.redis_cpu_us_per_call

    @property
    def ceiling_items_per_s(self) -> float:
        return self.ceiling_calls_per_s * self.items_per_call


async def _redis_cpu_s(redis: Redis) -> float:
    """CPU time (user + system) the Redis server has used since it started."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _drive(
    redis: Redis, duration_s: float, call: Callable[[int], Awaitable[object]]
) -> tuple[int, float, float]:
    """`call(n)` from CONCURRENCY loops for `duration_s`: (calls, wall s, Redis CPU s)."""
    counter = 0
    stop_at = time.monotonic() + duration_s

    async def loop() -> None:
        nonlocal counter
        while time.monotonic() < stop_at:
            counter += 1
            await call(counter)

    cpu_before, started = await _redis_cpu_s(redis), time.monotonic()
    await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    wall, cpu = time.monotonic() - started, await _redis_cpu_s(redis) - cpu_before
    return counter, wall, cpu


def _stamps(redis_url: str, wave: str, last_seq: int) -> dict[int, str]:
    """Every ticket's stamp, so status calls take the path a real holder's poll takes."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    try:
        seqs = list(range(1, last_seq + 1))
        return dict(zip(seqs, ticket_stamps(client, wave, seqs), strict=True))
    finally:
        client.close()


def _registrant(salt: str, i: int) -> tuple[str, int]:
    digest = hashlib.blake2b(f"{salt}{i}".encode(), digest_size=16).digest()
    return digest.hex()[:22], int.from_bytes(digest[:4], "big") % REGISTRANT_BUCKETS


async def measure(
    redis_url: str, join_wave: str, status_wave: str, last_seq: int, duration_s: float
) -> list[Ceiling]:
    """`status_wave` holds `last_seq` waiting tickets; `join_wave` is open and empty."""
    redis = Redis.from_url(redis_url)
    store = Store(redis, clock=None, timeout_s=30)
    limits = RateLimitRules()  # the default rules: each join checks two GCRA keys
    raw = await redis.hget(WaveKeys(status_wave).ctl, "inc")
    incarnation = raw.decode() if isinstance(raw, bytes) else str(raw or "")
    stamps = _stamps(redis_url, status_wave, last_seq)
    results: list[Ceiling] = []
    try:
        await store.load_scripts()

        async def join(n: int) -> None:
            requests = [
                JoinRequest(*_registrant(f"c{n}-", i), f"10.{n % 250}.{i}.1", "")
                for i in range(BATCH)
            ]
            await store.join(
                join_wave, requests, [0] * BATCH, new_stamps(BATCH), limits, 0.06, HighWater()
            )

        async def status(n: int) -> None:
            first = 1 + (n * BATCH) % max(1, last_seq - BATCH)
            batch = [StatusRequest(first + i, incarnation, stamps[first + i]) for i in range(BATCH)]
            await store.status(status_wave, batch)

        async def seen(n: int) -> None:
            first = 1 + (n * DEADLINES_PER_FLUSH) % max(1, last_seq - DEADLINES_PER_FLUSH)
            deadline = int(time.time() * 1000) + 600_000
            await store.record_deadlines(
                status_wave, {first + i: deadline for i in range(DEADLINES_PER_FLUSH)}
            )

        async def admit(n: int) -> None:
            await store.admit(status_wave)

        for op, items, call in (
            ("join", BATCH, join),
            ("status (Redis path)", BATCH, status),
            ("seen flush", DEADLINES_PER_FLUSH, seen),
            ("admission step", 1, admit),
        ):
            calls, wall, cpu = await _drive(redis, duration_s, call)
            results.append(Ceiling(op, items, calls / wall, cpu * 1e6 / max(1, calls)))
    finally:
        await redis.aclose()
    return results


def run(
    redis_url: str, join_wave: str, status_wave: str, last_seq: int, duration_s: float
) -> list[Ceiling]:
    return asyncio.run(measure(redis_url, join_wave, status_wave, last_seq, duration_s))


@dataclass(frozen=True)
class ClusterRun:
    joins_per_s: float
    """All waves together, as the driver achieved them."""
    redis_cpu_us_per_call: dict[int, float]
    """By master port: Redis CPU per join call on that master."""
    calls: dict[int, int]


async def measure_cluster(
    cluster_url: str, waves_by_port: dict[int, str], fields: dict[str, object], duration_s: float
) -> ClusterRun:
    """Joins to one wave per master at once, through one cluster client (as a queue process
    serving several waves would send them); each master's CPU from its own INFO."""
    client = connect_redis(Settings(redis_url=cluster_url, redis_timeout_s=30))
    store = Store(client, clock=None, timeout_s=30)
    nodes = {port: Redis(host="127.0.0.1", port=port) for port in waves_by_port}
    limits = RateLimitRules()
    calls = dict.fromkeys(waves_by_port, 0)
    try:
        for wave in waves_by_port.values():
            await store.put_wave(parse_wave(wave, fields))
        stop_at = time.monotonic() + duration_s

        async def loop(port: int, wave: str, worker: int) -> None:
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                calls[port] += 1
                requests = [
                    JoinRequest(*_registrant(f"{wave}-{worker}-{n}-", i), f"10.{n % 250}.{i}.1", "")
                    for i in range(BATCH)
                ]
                await store.join(
                    wave, requests, [0] * BATCH, new_stamps(BATCH), limits, 0.06, HighWater()
                )

        before = {port: await _redis_cpu_s(node) for port, node in nodes.items()}
        started = time.monotonic()
        await asyncio.gather(
            *(
                loop(port, wave, worker)
                for port, wave in waves_by_port.items()
                for worker in range(CONCURRENCY)
            )
        )
        wall = time.monotonic() - started
        used = {port: await _redis_cpu_s(node) - before[port] for port, node in nodes.items()}
    finally:
        await client.aclose()
        for node in nodes.values():
            await node.aclose()
    return ClusterRun(
        sum(calls.values()) * BATCH / wall,
        {port: used[port] * 1e6 / max(1, calls[port]) for port in nodes},
        calls,
    )


def run_cluster(
    cluster_url: str, waves_by_port: dict[int, str], fields: dict[str, object], duration_s: float
) -> ClusterRun:
    return asyncio.run(measure_cluster(cluster_url, waves_by_port, fields, duration_s))


def ceiling_rows(runs: list[list[Ceiling]]) -> list[Row]:
    rows = []
    for index, first in enumerate(runs[0]):
        same = [r[index] for r in runs]
        cpu_us = statistics.median(c.redis_cpu_us_per_call for c in same)
        rows.append(
            Row(
                f"Redis ceiling: {first.op}, {first.items_per_call} per call",
                "steps/s" if first.items_per_call == 1 else "items/s",
                [c.ceiling_items_per_s for c in same],
                target="informational",
                extra={"redis_cpu_us_per_call": cpu_us},
                note=(
                    f"{cpu_us:,.0f} µs of Redis CPU per call -> {1e6 / cpu_us:,.0f} calls/s "
                    f"on one Redis core; the driver reached "
                    f"{statistics.median(c.calls_per_s for c in same):,.0f} calls/s"
                ),
            )
        )
    return rows


CLUSTER_WAVES = [f"gelombang-{region}" for region in ("aceh", "bali", "jambi", "maluku")] + [
    f"gelombang-{n}" for n in range(20)
]


def cluster_benchmark(
    work: Path, runs: int, duration_s: float, fields: dict[str, object]
) -> list[Row]:
    """One wave per master of a real 3-master cluster, joins to all three at once from this
    process; each master's Redis CPU per join call, to compare with one master alone. Waves
    share no key and no script call, so the cluster's ceiling is the sum of its masters'. On
    2 cores the three masters and the driver share the machine."""
    measured: list[ClusterRun] = []
    with local_cluster(work / "cluster", masters=3) as running:
        for n in range(runs):
            # fresh, empty waves each run, one on each master
            waves = running.one_wave_per_master([f"{w}-{n}" for w in CLUSTER_WAVES])
            measured.append(run_cluster(running.url, waves, fields, duration_s))
    cpu = statistics.median(statistics.median(r.redis_cpu_us_per_call.values()) for r in measured)
    ceiling = statistics.median(
        sum(1e6 / c for c in r.redis_cpu_us_per_call.values()) * BATCH for r in measured
    )
    return [
        Row(
            "cluster: joins over 3 waves on 3 masters",
            "joins/s",
            [r.joins_per_s for r in measured],
            target="informational",
            extra={"redis_cpu_us_per_call": cpu, "ceiling_joins_per_s": ceiling},
            note=(
                f"the driver's rate; {cpu:,.0f} µs of Redis CPU per {BATCH}-join call on "
                f"each master -> the three masters' ceiling {ceiling:,.0f} joins/s"
            ),
        )
    ]
