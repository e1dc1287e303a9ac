"""State over a long wave: what a finished ticket leaves behind in Redis, and whether a queue
process's memory stays flat.

Rounds of `tickets` registrants join one wave through one `gelombang serve`; half of them leave,
the other half never poll again and are skipped as abandoned once the cursor reaches them
(the wave is paused until their deadlines have passed, then resumed). After every round:
Redis's `used_memory` against the empty wave's, and the process's RSS."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import redis

from loadtests.bench import seed
from loadtests.bench.processes import Server, queue_server, redis_server
from loadtests.bench.report import Row
from queue_service.keys import WaveKeys

WAVE = "bench-reclaim"
ADMIN_TOKEN = "bench-reclaim-admin-token"
GRACE_S = 5
CONCURRENCY = 64


async def _round(base_url: str, first: int, count: int) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(base_url) as http:
        async with http.post(f"/admin/v1/waves/{WAVE}/pause", headers=headers) as response:
            assert response.status == 200, await response.text()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(first, first + count):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                async with http.post(
                    f"/api/v1/waves/{WAVE}/join", json={"registrant": f"reclaim-{i}"}
                ) as response:
                    body = await response.json()
                    assert response.status == 201, body
                if i % 2:  # half leave; the other half are gone without a word
                    async with http.post(
                        f"/api/v1/waves/{WAVE}/leave", headers={"X-Queue-Ticket": body["ticket"]}
                    ) as left:
                        assert left.status == 204

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        await asyncio.sleep(GRACE_S * 1.5)  # every deadline passes
        async with http.post(f"/admin/v1/waves/{WAVE}/resume", headers=headers) as response:
            assert response.status == 200


def _wait_until_passed(client: redis.Redis, seq_total: int) -> None:
    keys = WaveKeys(WAVE)
    deadline = time.monotonic() + 120
    while int(client.hget(keys.ctl, "cursor") or 0) < seq_total:
        assert time.monotonic() < deadline, "the cursor did not pass the round"
        time.sleep(0.2)
    time.sleep(1.0)  # a few more steps: the left list is trimmed behind the cursor


def _rss_mb(server: Server) -> float:
    import psutil

    return float(psutil.Process(server.pgid).memory_info().rss) / 2**20


def reclaim_rows(work: Path, *, tickets: int, rounds: int, client_cpu: str) -> list[Row]:
    if rounds < 2:
        raise ValueError("reclaim needs at least 2 rounds (the first one fills the buckets)")
    fields = {**seed.wave_fields(admit_rate=2000), "abandon_after_s": GRACE_S}
    with redis_server(work, {int(client_cpu)}) as rs:
        asyncio.run(_create(rs.url, fields))
        config = seed.write_config(work / "bench.toml")
        config.write_text(config.read_text() + f'admin_token = "{ADMIN_TOKEN}"\n')
        client = redis.Redis.from_url(rs.url)
        baseline = int(client.info("memory")["used_memory"])
        rss: list[float] = []
        redis_bytes: list[int] = []
        with queue_server(work, rs.url, config) as queue:
            rss.append(_rss_mb(queue))
            for n in range(rounds):
                asyncio.run(_round(queue.url, n * tickets, tickets))
                _wait_until_passed(client, (n + 1) * tickets)
                redis_bytes.append(int(client.info("memory")["used_memory"]) - baseline)
                rss.append(_rss_mb(queue))
        client.close()
    finished = rounds * tickets
    # what each further round of finished tickets adds (the first round also pays for buckets
    # and scripts that stay whatever the number of tickets)
    per_ticket = (redis_bytes[-1] - redis_bytes[0]) / ((rounds - 1) * tickets)
    growth = rss[-1] - rss[1]
    return [
        Row(
            f"reclaim: Redis bytes per finished ticket, {finished:,} tickets",
            "B/ticket",
            [max(per_ticket, 0.0)],
            target="< 10 B",
            met=per_ticket < 10,
            extra={"redis_bytes_after_each_round": float(redis_bytes[-1])},
            note="used_memory above the empty wave's after each round: "
            + ", ".join(f"{b / 1024:.0f} KiB" for b in redis_bytes),
        ),
        Row(
            f"reclaim: queue process RSS growth over rounds 2-{rounds}",
            "MB",
            [max(growth, 0.0)],
            target="flat (< 5 MB)",
            met=growth < 5,
            note="RSS at start and after each round: " + ", ".join(f"{r:.1f}" for r in rss),
        ),
    ]


async def _create(redis_url: str, fields: dict[str, object]) -> None:
    from queue_service.store import Store
    from queue_service.waves import parse_wave

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await Store(client, clock=None, timeout_s=30).put_wave(parse_wave(WAVE, fields))
    finally:
        await client.aclose()
