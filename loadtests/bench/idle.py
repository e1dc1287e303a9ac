"""What waves nobody is in cost a process: a deployment with a wave per province plus every
past wave must pay for the waves people are in, not for the others.

One `gelombang serve` (pinned) with N waves open and empty, or closed; its CPU over a window,
the Redis CPU it causes, and the latency of joins to one more wave meanwhile (sequential, on
one keep-alive connection)."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import aiohttp
import redis

from loadtests.bench import seed
from loadtests.bench.processes import queue_server, redis_server
from loadtests.bench.report import Row
from queue_service.store import Store
from queue_service.waves import parse_wave

JOIN_WAVE = "bench-idle-join"
JOINS = 200
WARM_UP_S = 3.0


async def _create(redis_url: str, count: int, *, closed: bool) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    store = Store(client, clock=None, timeout_s=30)
    fields = seed.wave_fields(admit_rate=10)
    if closed:
        fields = {**fields, "opens_at": time.time() - 7200, "closes_at": time.time() - 3600}
    try:
        for i in range(count):
            await store.put_wave(parse_wave(f"idle-{'closed' if closed else 'open'}-{i}", fields))
    finally:
        await client.aclose()


async def _join_latencies(base_url: str) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession(base_url) as http:
        for i in range(JOINS):
            started = time.perf_counter()
            async with http.post(
                f"/api/v1/waves/{JOIN_WAVE}/join", json={"registrant": f"idle-bench-{i}"}
            ) as response:
                await response.read()
                assert response.status in (200, 201), response.status
            latencies.append(time.perf_counter() - started)
    return latencies


def _redis_cpu_s(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def idle_rows(
    work: Path, counts: list[int], *, duration_s: float, server_cpu: str, client_cpu: str
) -> list[Row]:
    rows = []
    for count in counts:
        for closed in (False, True):
            label = "closed" if closed else "open, nobody waiting"
            with redis_server(work / f"idle-{count}-{closed}", {int(client_cpu)}) as rs:
                asyncio.run(_create(rs.url, count, closed=closed))
                seed.seed_wave(rs.url, JOIN_WAVE, admit_rate=0.01, count=0)
                config = seed.write_config(work / "bench.toml")
                client = redis.Redis.from_url(rs.url)
                with queue_server(work, rs.url, config, cpus=server_cpu) as queue:
                    time.sleep(min(WARM_UP_S, duration_s))
                    cpu0, redis0, t0 = queue.cpu_seconds(), _redis_cpu_s(client), time.time()
                    time.sleep(duration_s)
                    cpu1, redis1, t1 = queue.cpu_seconds(), _redis_cpu_s(client), time.time()
                    latencies = asyncio.run(_join_latencies(queue.url))
                client.close()
            core_share = (cpu1 - cpu0) / (t1 - t0)
            per_wave_us = core_share / count * 1e6
            p50_ms = statistics.median(latencies) * 1000
            rows.append(
                Row(
                    f"idle: {count} waves {label}",
                    "% of a core",
                    [core_share * 100],
                    target="next to nothing (< 5%)",
                    met=core_share < 0.05,
                    extra={
                        "cpu_us_per_wave_per_s": per_wave_us,
                        "redis_core_share": (redis1 - redis0) / (t1 - t0),
                        "join_p50_ms": p50_ms,
                    },
                    note=(
                        f"{per_wave_us:.0f} µs of CPU per wave per second; Redis "
                        f"{(redis1 - redis0) / (t1 - t0) * 100:.1f}% of a core; join p50 "
                        f"{p50_ms:.1f} ms meanwhile"
                    ),
                )
            )
    return rows
