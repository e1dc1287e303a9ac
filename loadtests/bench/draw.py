"""How long the opening waits for the pre-queue draw: `python -m loadtests.bench.draw N`.

Builds a wave whose pre-queue holds N tickets (written straight into Redis, as N joins would
leave them), then runs the service's own draw (prequeue_draw.draw_prequeue: the order computed
from the seed, the ranks written, the seed revealed) and reports its wall time and the drawing
process's CPU. Nobody is admitted until it is done (loadtests/RESULTS.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import redis

from loadtests.bench.processes import redis_server
from queue_service.keys import WaveKeys
from queue_service.prequeue_draw import draw_prequeue
from queue_service.redis_client import connect_redis
from queue_service.settings import Settings
from queue_service.store import Store
from queue_service.waves import parse_wave

WAVE = "bench-draw"


def fill_prequeue(url: str, size: int) -> None:
    client = redis.Redis.from_url(url)
    keys = WaveKeys(WAVE)
    pipe = client.pipeline(transaction=False)
    for first in range(1, size + 1, 10_000):
        last = min(size, first + 9_999)
        pipe.zadd(keys.prequeue, {str(s): s * 7919 % 1_000_003 for s in range(first, last + 1)})
    pipe.hset(keys.ctl, mapping={"seq": size, "open_seq": size})
    pipe.execute()
    client.close()


async def measure(url: str, size: int) -> tuple[float, float]:
    store = Store(connect_redis(Settings(redis_url=url)), clock=None, timeout_s=30)
    try:
        await store.load_scripts()
        now = time.time()
        definition = {"opens_at": now + 3600, "closes_at": now + 7200, "admit_rate": 100,
                      "origin_url": "http://127.0.0.1:9/", "prequeue_s": 7200}  # fmt: skip
        await store.put_wave(parse_wave(WAVE, definition))
        await asyncio.to_thread(fill_prequeue, url, size)
        wall, cpu = time.monotonic(), time.process_time()
        if not await draw_prequeue(store, WAVE):
            raise RuntimeError("the draw did not complete")
        return time.monotonic() - wall, time.process_time() - cpu
    finally:
        await store.redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench.draw")
    parser.add_argument("size", type=int, nargs="?", default=1_000_000, help="N (1000000)")
    args = parser.parse_args(argv)
    with redis_server(Path(tempfile.mkdtemp(prefix="gelombang-draw-")), None) as rs:
        wall, cpu = asyncio.run(measure(rs.url, args.size))
    print(f"pre-queue of {args.size:,}: drawn in {wall:.1f} s wall, {cpu:.1f} s CPU of the "
          "drawing process")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
