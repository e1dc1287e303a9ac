"""The soak test: a bounded run of mixed, realistic traffic against real processes (two
workers, an embedded Redis with AOF), with a Redis restart and a worker killed on the way.
Opt-in: `scripts/test tests/e2e/test_soak.py --soak 300` (five minutes); skipped otherwise, so CI's
default run stays short. Its report (printed, and written to soak-report.json in the test's
temporary folder) states requests served, errors by class, acknowledged tickets lost (must be
0), the largest RSS of the service and the p99 of the answers."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
import psutil
import pytest

from queue_service.redis_server import EmbeddedRedis
from tests.helpers.processes import ServeProcess
from tests.helpers.support import ADMIN, ORIGIN

pytestmark = pytest.mark.slow

REGISTRANTS = 400
MAX_RSS_BYTES = 512 * 2**20


def rss_of_tree(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


async def test_soak(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    seconds = float(request.config.getoption("--soak"))
    if seconds <= 0:
        pytest.skip("the soak test runs with --soak SECONDS (e.g. --soak 300)")
    redis = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    served = 0
    acked: dict[str, str] = {}
    rss_peak = 0
    try:
        with ServeProcess(redis.url, tmp_path / "state", workers=2) as serve:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                now = time.time()
                wave = {"opens_at": now - 5, "closes_at": now + seconds + 600, "admit_rate": 2,
                        "max_active": 20, "session_ttl_s": 20, "abandon_after_s": 30,
                        "origin_url": ORIGIN}  # fmt: skip
                async with http.put(f"{serve.url}/admin/v1/waves/soak", json=wave,
                                    headers=ADMIN) as r:  # fmt: skip
                    assert r.status == 201
                end = time.monotonic() + seconds

                async def call(
                    method: str, path: str, **kwargs: object
                ) -> tuple[int, dict[str, object]]:
                    nonlocal served
                    started = time.monotonic()
                    try:
                        async with http.request(method, serve.url + path, **kwargs) as r:  # type: ignore[arg-type]
                            body = await r.json() if r.content_type == "application/json" else {}
                            latencies.append(time.monotonic() - started)
                            served += 1
                            if r.status >= 500:
                                errors[f"{r.status} {body.get('error', {}).get('code')}"] += 1
                            elif r.status >= 400:
                                errors[f"{r.status}"] += 1
                            return r.status, body
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        errors[type(exc).__name__] += 1
                        return 0, {}

                async def registrant(i: int) -> None:
                    rng = random.Random(i)
                    while time.monotonic() < end:
                        name = f"r{i}-{rng.randrange(10**6)}"
                        status, body = await call("POST", "/api/v1/waves/soak/join",
                                                  json={"registrant": name})  # fmt: skip
                        if status not in (200, 201):
                            await asyncio.sleep(2)
                            continue
                        ticket = str(body["ticket"])
                        acked[name] = ticket
                        headers = {"X-Queue-Ticket": ticket}
                        while time.monotonic() < end:
                            await asyncio.sleep(
                                min(5.0, int(body.get("poll_after_ms") or 1000) / 1000)
                            )
                            status, answer = await call("GET", "/api/v1/waves/soak/status",
                                                        headers=headers)  # fmt: skip
                            if status != 200:
                                continue
                            body = answer
                            if answer.get("state") == "admitted":
                                await asyncio.sleep(rng.uniform(1, 5))
                                await call("POST", "/api/v1/waves/soak/complete", headers={
                                    "Authorization": f"Bearer {answer['token']}"})  # fmt: skip
                                break
                            if (
                                answer.get("state") != "waiting"
                                and answer.get("state") != "closing"
                            ):
                                break
                            if rng.random() < 0.002:
                                await call("POST", "/api/v1/waves/soak/leave", headers=headers)
                                break

                async def faults() -> None:
                    nonlocal rss_peak
                    restarted = killed = False
                    while time.monotonic() < end:
                        await asyncio.sleep(1)
                        rss_peak = max(rss_peak, rss_of_tree(serve.pid))
                        elapsed = seconds - (end - time.monotonic())
                        if not restarted and elapsed > seconds / 3:
                            redis.stop()  # a Redis restart (AOF): nothing acknowledged is lost
                            redis.start()
                            restarted = True
                        if not killed and elapsed > 2 * seconds / 3:
                            workers = psutil.Process(serve.pid).children()
                            if workers:
                                workers[0].send_signal(signal.SIGKILL)  # the supervisor restarts it
                            killed = True

                await asyncio.gather(*(registrant(i) for i in range(REGISTRANTS)), faults())
                await asyncio.sleep(2)
                lost = 0
                for ticket in acked.values():
                    status, body = await call("GET", "/api/v1/waves/soak/status",
                                              headers={"X-Queue-Ticket": ticket})  # fmt: skip
                    if status == 401 or (status == 200 and body.get("state") == "unknown"):
                        lost += 1
    finally:
        redis.stop()
    latencies.sort()
    report = {
        "seconds": seconds,
        "requests_served": served,
        "errors_by_class": dict(errors),
        "acknowledged_tickets": len(acked),
        "acknowledged_tickets_lost": lost,
        "max_rss_mb": round(rss_peak / 2**20, 1),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
    }
    (tmp_path / "soak-report.json").write_text(json.dumps(report, indent=2))
    print("\nsoak report:", json.dumps(report, indent=2))
    assert lost == 0, report
    assert not [k for k in errors if k.startswith("5") and "store_unavailable" not in k], report
    assert rss_peak < MAX_RSS_BYTES, report
