"""Bench waves and their tickets, written straight into Redis with the service's own scripts
(`Store.put_wave`, `Store.join`: the same Lua a join runs) — millions of tickets in seconds
instead of hours of HTTP joins."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from queue_service.keys import REGISTRANT_BUCKETS, WaveKeys
from queue_service.ratelimit import RateLimitRules
from queue_service.store import HighWater, JoinRequest, Store
from queue_service.tickets import Ticket, TicketCodec, new_stamps
from queue_service.waves import parse_wave

BENCH_SECRET = "gelombang-bench-secret"
ORIGIN = "http://127.0.0.1:9/origin"
SEED_BATCH = 2000
SEED_CONCURRENCY = 4
NO_LIMITS = RateLimitRules(enabled=False)


def wave_fields(admit_rate: float) -> dict[str, object]:
    """Open since a minute, for a day; nobody is abandoned during a benchmark."""
    now = int(time.time())
    return {
        "opens_at": now - 60,
        "closes_at": now + 86_400,
        "admit_rate": admit_rate,
        "abandon_after_s": 86_400,
        "session_ttl_s": 600,
        "origin_url": ORIGIN,
    }


def write_config(path: Path) -> Path:
    """The serve config: the shared ticket secret (so the bench can mint tickets) and no waves
    (the bench creates them in Redis before the server starts)."""
    path.write_text(f'[service]\nsecret = "{BENCH_SECRET}"\nlog_format = "text"\n')
    return path


def ticket_codec() -> TicketCodec:
    return TicketCodec(BENCH_SECRET.encode())


def _registrant(i: int, salt: str) -> tuple[str, int]:
    """A registrant hash shaped like the service's (22 url-safe chars) without the HMAC cost."""
    digest = hashlib.blake2b(f"{salt}{i}".encode(), digest_size=16).digest()
    text = digest.hex()[:22]
    return text, int.from_bytes(digest[:4], "big") % REGISTRANT_BUCKETS


async def _seed(redis_url: str, wave: str, admit_rate: float, count: int) -> int:
    redis = Redis.from_url(redis_url)
    try:
        store = Store(redis, clock=None, timeout_s=120)
        await store.put_wave(parse_wave(wave, wave_fields(admit_rate)))
        salt = f"{wave}-{random.random()}-"
        queue: asyncio.Queue[range] = asyncio.Queue()
        for start in range(0, count, SEED_BATCH):
            queue.put_nowait(range(start, min(count, start + SEED_BATCH)))

        async def worker() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                requests = [JoinRequest(*_registrant(i, salt), "10.0.0.1", "") for i in chunk]
                await store.join(
                    wave, requests, [0] * len(requests), new_stamps(len(requests)), NO_LIMITS,
                    0.0, HighWater(),
                )  # fmt: skip

        await asyncio.gather(*(worker() for _ in range(SEED_CONCURRENCY)))
        seq = await redis.hget(WaveKeys(wave).ctl, "seq")
        return int(seq or 0)
    finally:
        await redis.aclose()


def seed_wave(redis_url: str, wave: str, *, admit_rate: float, count: int) -> int:
    """Create `wave` (open) with `count` waiting tickets; returns the wave's last ticket seq."""
    return asyncio.run(_seed(redis_url, wave, admit_rate, count))


def ticket_stamps(client: Any, wave: str, seqs: list[int]) -> list[str]:
    """The stamps of a wave's tickets, read from their records (a synchronous client)."""
    keys = WaveKeys(wave)
    pipe = client.pipeline(transaction=False)
    for seq in seqs:
        pipe.hget(keys.ticket_bucket(seq), str(seq))
    records = pipe.execute()
    return [_text(record).split("|")[3] for record in records]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def mint_tickets(redis_url: str, wave: str, seqs: list[int]) -> list[str]:
    """Valid tickets of a seeded wave (signed with its uid, incarnation and each ticket's stamp,
    as a join would)."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = WaveKeys(wave)
        uid = str(client.hget(keys.cfg, "uid") or "")
        incarnation = str(client.hget(keys.ctl, "inc") or "")
        stamps = ticket_stamps(client, wave, seqs)
    finally:
        client.close()
    codec = ticket_codec()
    return [
        codec.encode(wave, uid, Ticket(seq, incarnation, stamp))
        for seq, stamp in zip(seqs, stamps, strict=True)
    ]


def write_tickets(path: Path, redis_url: str, wave: str, seqs: list[int]) -> Path:
    path.write_text("".join(t + "\n" for t in mint_tickets(redis_url, wave, seqs)))
    return path


def sample_seqs(first: int, last: int, size: int) -> list[int]:
    """`size` ticket numbers spread over [first, last], shuffled (polls hit the whole queue)."""
    population = range(first, last + 1)
    picked = random.sample(population, min(size, len(population)))
    return picked


def used_memory(redis_url: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()
