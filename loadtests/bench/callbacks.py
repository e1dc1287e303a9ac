"""What call-backs cost Redis: `python -m loadtests.bench.callbacks N`.

Builds a wave with N waiting tickets (joined through the service's own join script), then:
- opts every one in (lua/optin.lua, one call each, 64 at a time, the contact encrypted as the
  service does):
  calls per second, and Redis memory per opted-in holder (the contact, its return code's
  index, its place in the call-back set);
- tells them all that their turn is near (lua/notify.lua, batches of 1000, as the notify step
  does): holders told per second, each with its message in the outbox;
- walks the admission cursor over them while they are away (lua/admit.lua: each is called, no
  slot, no token): positions decided per second, against the same walk over holders who poll.
Results and the command: loadtests/RESULTS.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from loadtests.bench.processes import redis_server
from queue_service.contacts import Contact, ContactCipher, ReturnCodes
from queue_service.ratelimit import RateLimitRules
from queue_service.redis_client import connect_redis
from queue_service.settings import Settings
from queue_service.store import HighWater, JoinRequest, Store
from queue_service.tickets import Ticket, new_stamps
from queue_service.waves import parse_wave

BATCH = 500
CONCURRENT_OPTINS = 64


async def fill(store: Store, wave: str, size: int, tag: str) -> list[Ticket]:
    tickets: list[Ticket] = []
    limits = RateLimitRules(enabled=False)
    for first in range(0, size, BATCH):
        count = min(BATCH, size - first)
        requests = [
            JoinRequest(f"{tag}{first + i:010d}", (first + i) % 1024, "127.0.0.1", "")
            for i in range(count)
        ]
        stamps = new_stamps(count)
        batch = await store.join(wave, requests, [0] * count, stamps, limits, 0.1, HighWater())
        tickets += [Ticket(o.seq, batch.incarnation, o.stamp) for o in batch.outcomes]
    return tickets


async def measure(url: str, size: int) -> dict[str, float]:
    store = Store(connect_redis(Settings(redis_url=url)), clock=None, timeout_s=60)
    cipher, codes = ContactCipher(os.urandom(32)), ReturnCodes(os.urandom(32))
    results: dict[str, float] = {}
    try:
        await store.load_scripts()
        now = time.time()
        notify = {"channels": ["sms"], "webhook_url": "http://127.0.0.1:9/", "lead_s": 60}
        await store.redis.config_set("maxmemory-policy", "noeviction")
        for wave, grace in (("bench-away", 5), ("bench-here", 3600)):
            definition = {"opens_at": now - 1, "closes_at": now + 7200, "admit_rate": 1e9,
                          "admit_burst": 1e9, "origin_url": "http://127.0.0.1:9/",
                          "abandon_after_s": grace, "notify": notify}  # fmt: skip
            await store.put_wave(parse_wave(wave, definition))
            await store.admit(wave)
        away = await fill(store, "bench-away", size, "a")
        await fill(store, "bench-here", size, "h")  # they poll: admitted when reached
        memory_before = int((await store.redis.info("memory"))["used_memory"])
        contact = Contact("sms", "+6281234567890").to_bytes()

        async def opt_in(ticket: Ticket) -> None:
            code_hash, bucket = codes.digest(codes.code("bench-away", "uid", ticket.stamp))
            sealed = cipher.seal(contact, cipher.associated("bench-away", "uid", ticket.stamp))
            await store.opt_in("bench-away", ticket, f"id|sms|{code_hash}|{bucket}", sealed, 3)

        started = time.perf_counter()
        for first in range(0, size, CONCURRENT_OPTINS):  # as concurrent requests would
            await asyncio.gather(*map(opt_in, away[first : first + CONCURRENT_OPTINS]))
        results["optin_per_s"] = size / (time.perf_counter() - started)
        memory_after = int((await store.redis.info("memory"))["used_memory"])
        results["bytes_per_holder"] = (memory_after - memory_before) / size
        started = time.perf_counter()
        told = 0
        while told < size:
            now_told, _ = await store.notify_near("bench-away", size, 1000)
            told += now_told
            if not now_told:
                break
        results["told_per_s"] = told / (time.perf_counter() - started)
        # the away holders' last poll deadlines pass (the wave paused, stepped as the loop
        # steps it, so no gap counts as an outage)
        await store.control("bench-away", "pause")
        for _ in range(25):
            await store.admit("bench-away")
            await asyncio.sleep(0.25)
        await store.control("bench-away", "resume")
        for wave, key in (("bench-away", "called"), ("bench-here", "admitted")):
            started = time.perf_counter()
            decided = 0
            while decided < size:
                step = await store.admit(wave, max_admit=10_000, max_scan=10_000)
                decided = step.counts.cursor
            results[f"{key}_per_s"] = size / (time.perf_counter() - started)
    finally:
        await store.redis.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench.callbacks")
    parser.add_argument("size", type=int, nargs="?", default=100_000, help="N (100000)")
    args = parser.parse_args(argv)
    with redis_server(Path(tempfile.mkdtemp(prefix="gelombang-callbacks-")), None) as rs:
        results = asyncio.run(measure(rs.url, args.size))
    print(f"{args.size:,} holders who opted in to be called back:")
    print(f"  opt-in (lua/optin.lua, 64 at a time): {results['optin_per_s']:,.0f} /s, "
          f"{results['bytes_per_holder']:.0f} bytes of Redis per holder")  # fmt: skip
    print(f"  told their turn is near (lua/notify.lua): {results['told_per_s']:,.0f} /s")
    print(f"  cursor over away holders (called): {results['called_per_s']:,.0f} positions/s; "
          f"over holders who poll (admitted): {results['admitted_per_s']:,.0f} /s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
