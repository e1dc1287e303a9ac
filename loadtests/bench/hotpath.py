"""In-process cost of the hot path, steadier than wrk on a shared machine:
`python -m loadtests.bench.hotpath`.

Builds the real app (`create_app`, real Redis, no admission loop), then pushes bursts of
concurrent requests through the app's own dispatch (routing, endpoint wrapper, handler, coalescer,
Lua script) and reports this process's CPU time per request (`time.process_time`: Redis runs
in its own process and waiting is not counted). HTTP parsing and writing are left out: they
are aiohttp's and the same for every handler. Best of several rounds (least disturbed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
import tempfile
import time
import uuid
from pathlib import Path
from unittest import mock

import uvloop
from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request

from loadtests.bench import seed
from loadtests.bench.benchmarks import IDLE_RATE, JOIN_WAVE, STATUS_WAVE
from loadtests.bench.processes import redis_server
from queue_service.app import create_app
from queue_service.settings import load_settings


def _transport() -> mock.Mock:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("127.0.0.1", 40000) if name == "peername" else default
    )
    return transport


async def _measure(
    redis_url: str, tickets: list[str], burst: int, rounds: int, profiler: cProfile.Profile | None
) -> dict[str, float]:
    settings = load_settings(
        {  # max_lag_s, max_inflight: a CPU-cost benchmark, its bursts must not be shed
            "redis_url": redis_url,
            "secret": seed.BENCH_SECRET,
            "state_dir": tempfile.mkdtemp(),
            "max_lag_s": 30,
            "max_inflight": 1_000_000,
        },
        environ={"GELOMBANG_RATE_LIMITS": "off"},
    )
    # admission loop on (at an idle rate): status polls are answered from its copy of the wave,
    # as in a running service
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await asyncio.sleep(1.5)  # the loop has listed the waves and stepped them
    transport = _transport()
    status_path = f"/api/v1/waves/{STATUS_WAVE}/status"
    join_path = f"/api/v1/waves/{JOIN_WAVE}/join"
    run_id = uuid.uuid4().hex[:8]
    counter = 0

    def status_request(i: int) -> web.Request:
        ticket = tickets[i % len(tickets)]
        return make_mocked_request(
            "GET", status_path, headers={"X-Queue-Ticket": ticket}, app=app, transport=transport
        )

    def join_request(i: int) -> web.Request:
        nonlocal counter
        counter += 1
        body = f'{{"registrant":"{run_id}-{counter}"}}'.encode()
        payload = StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
        payload.feed_data(body)
        payload.feed_eof()  # the whole body came with the headers, as a real join's does
        return make_mocked_request(
            "POST",
            join_path,
            headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
            app=app,
            transport=transport,
            payload=payload,
        )

    async def burst_cost(make: object) -> float:
        build = make  # type: ignore[assignment]
        requests = [build(i) for i in range(burst)]  # type: ignore[operator]
        if profiler:
            profiler.enable()
        started = time.process_time()
        responses = await asyncio.gather(*(app._handle(r) for r in requests))
        used = time.process_time() - started
        if profiler:
            profiler.disable()
        bad = [r.status for r in responses if r.status >= 300]
        if bad:
            raise RuntimeError(f"unexpected answers: {bad[:5]}")
        return used / burst * 1e6

    results: dict[str, float] = {}
    try:
        for name, make in (("status", status_request), ("join", join_request)):
            await burst_cost(make)  # warm-up
            results[name] = min([await burst_cost(make) for _ in range(rounds)])
    finally:
        await runner.cleanup()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench.hotpath")
    parser.add_argument("--burst", type=int, default=64, help="concurrent requests (64)")
    parser.add_argument("--rounds", type=int, default=200, help="bursts per figure (200)")
    parser.add_argument("--cprofile", type=Path, help="save a cProfile of the measured bursts")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gelombang-hotpath-"))
    with redis_server(work, None) as rs:
        seed.seed_wave(rs.url, STATUS_WAVE, admit_rate=IDLE_RATE, count=10_000)
        seed.seed_wave(rs.url, JOIN_WAVE, admit_rate=IDLE_RATE, count=0)
        tickets = seed.mint_tickets(rs.url, STATUS_WAVE, list(range(200, 5_200)))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            profiler = cProfile.Profile() if args.cprofile else None
            results = runner.run(_measure(rs.url, tickets, args.burst, args.rounds, profiler))
            if profiler and args.cprofile:
                profiler.dump_stats(args.cprofile)
    print("| path | cpu us/request (best burst) |")
    print("|---|---|")
    for name, cost in results.items():
        print(f"| {name} | {cost:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
