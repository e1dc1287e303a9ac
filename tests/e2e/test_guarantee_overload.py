"""Guarantee 12: beyond a bounded number of requests in flight (and of open connections), a
process answers a fast 503 + Retry-After instead of collapsing slowly: the requests it takes
stay fast, /readyz says it is saturated, and its memory stays bounded. Once with the bounds
pinned (an operator's override), once on the shipped defaults, where the bounds adapt to the
host (Little's law: measured throughput × the target queueing delay). Loopback only, bounded
in time; the flood is wrk, the measurements a separate client."""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.bench.wrk import LUA_DIR
from queue_service.settings import AUTO, Settings
from tests.helpers.processes import ServeProcess
from tests.helpers.support import ADMIN, ORIGIN
from tests.helpers.tools import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.exclusive]  # measures latency

MAX_CONNECTIONS = 300
MAX_INFLIGHT = 128
FLOOD_CONNECTIONS = 3000  # ten times what the process keeps open
FLOOD_S = 9  # the probe, then the newcomers, all while the flood is on
FLOOD_ONSET_S = 1.5
PROBE_S = 5.0
ACCEPTED_P99_S = 0.25
MAX_RSS_BYTES = 300 * 2**20
SHIPPED_DEFAULTS = {  # the harness pins the bounds out of the way of a loaded CI machine
    "GELOMBANG_MAX_CONNECTIONS": AUTO,
    "GELOMBANG_MAX_INFLIGHT": AUTO,
    "GELOMBANG_MAX_LAG_S": str(Settings.max_lag_s),
}
ADAPTIVE_FLOOD_CONNECTIONS = 3000  # ten times what a process on a 2-core host keeps open
ADAPTIVE_FLOOD_S = 10
NEWCOMER_WAIT_S = 5.0
"""A newcomer's 503 arrives within this: the flood in the listen queue is refused in bulk."""


def answered_by_edge(exposition: str) -> dict[float, float]:
    """The process's 2xx answers, every route together, by latency bucket edge (cumulative)."""
    answered: dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != "gelombang_http_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels["status_class"] == "2xx":
                edge = float(sample.labels["le"])
                answered[edge] = answered.get(edge, 0.0) + sample.value
    return answered


def assert_p99_under_target(probe_latencies: list[float], before: str, after: str) -> None:
    """The requests the process took kept p99 < ACCEPTED_P99_S, judged twice:
    - on every request it answered with a 2xx while the probe ran (thousands, the flood's
      included: the /metrics `before` and `after`), by its own latency histogram, which has a
      bucket edge at the target: at least 99% of them within it, exactly;
    - on what the polite client measured end to end (tens of samples, each one also waiting on
      the loop before its handler starts): a p99 is not the slowest of 50 samples. The test
      fails when the samples over the target are too many to come from a p99 within it (fewer
      than a 1% chance: one-sided binomial test), so one host hiccup is no failure and a
      regression to a p98 at the target is."""
    start, end = answered_by_edge(before), answered_by_edge(after)
    assert ACCEPTED_P99_S in end, sorted(end)
    within, total = (end[edge] - start.get(edge, 0.0) for edge in (ACCEPTED_P99_S, math.inf))
    assert total >= 1000 and within >= 0.99 * total, (within, total)
    ordered = sorted(probe_latencies)
    n = len(ordered)
    over = sum(latency >= ACCEPTED_P99_S for latency in ordered)
    chance = sum(math.comb(n, k) * 0.01**k * 0.99 ** (n - k) for k in range(over, n + 1))
    slowest = [round(latency * 1000) for latency in ordered[-5:]]
    median = ordered[n // 2] * 1000
    assert chance >= 0.01, (
        f"{over} of {n} over the target: slowest {slowest} ms, median {median:.0f}"
    )


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    """The process's /metrics now (never shed, so it answers during the flood)."""
    async with http.get(url + "/metrics") as response:
        return await response.text()


async def flood_on_its_own_cpu(
    server_pid: int, wrk: str, *arguments: str
) -> asyncio.subprocess.Process:
    """wrk (two threads, 10 s timeout) with `arguments`; the process under test on one CPU, the
    flood on the other (as in the benchmark): what is measured is the process's own queue, not
    the flood's threads taking its CPU."""
    server_cpu, flood_cpu = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(server_pid, {server_cpu})
    return await asyncio.create_subprocess_exec(
        "taskset", "-c", str(flood_cpu), wrk, "-t2", "--timeout", "10s", *arguments,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def probe(
    http: aiohttp.ClientSession, url: str, ticket: str, until: float
) -> dict[str, object]:
    """A polite client on its own keep-alive connection, opened before the flood: a status
    poll and a join every 50 ms; the latency of every answer the process took (2xx), and every
    refusal. (A client connecting during the flood waits in the kernel's listen queue first.)"""
    latencies: list[float] = []
    refusals: list[tuple[int, str | None, str]] = []
    readiness: list[str] = []
    held: list[float] = []
    """Open connections over the bound, at each /readyz."""
    n = 0
    while time.monotonic() < until:
        n += 1
        for method, path, kwargs in (
            ("GET", "/api/v1/waves/w/status", {"headers": {"X-Queue-Ticket": ticket}}),
            ("POST", "/api/v1/waves/w/join", {"json": {"registrant": f"probe-{n}"}}),
        ):
            started = time.monotonic()
            try:
                async with http.request(method, url + path, **kwargs) as response:
                    body = await response.read()
                    if response.status < 300:
                        latencies.append(time.monotonic() - started)
                    else:
                        code = json.loads(body)["error"]["code"]
                        refusals.append(
                            (response.status, response.headers.get("Retry-After"), code)
                        )
            except (aiohttp.ClientError, TimeoutError):
                refusals.append((0, None, "connection"))
        async with http.get(url + "/readyz") as response:
            ready = await response.json()
            readiness.append(ready.get("status", "error"))
            held.append(ready.get("connections", 0) / max(1, ready.get("max_connections", 1)))
        await asyncio.sleep(0.05)
    return {
        "latencies": sorted(latencies),
        "refusals": refusals,
        "readiness": readiness,
        "held": sorted(held),
    }


async def extra_connections(
    url: str, count: int, timings: list[float] | None = None
) -> list[tuple[int, str | None, str]]:
    """`count` new clients while the process is full: each is refused fast, in the JSON shape
    (the time each waited for its answer goes to `timings`)."""

    async def one() -> tuple[int, str | None, str]:
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            try:
                async with http.get(url + "/api/v1/waves/w") as response:
                    body = await response.json()
                    code = body.get("error", {}).get("code", "") if response.status >= 300 else ""
                    return response.status, response.headers.get("Retry-After"), code
            except (aiohttp.ClientError, TimeoutError):
                return 0, None, "connection"
            finally:
                if timings is not None:
                    timings.append(time.monotonic() - started)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_a_flood_is_shed_fast_while_accepted_requests_stay_fast(tmp_path: Path) -> None:
    wrk = require_tool("wrk", package="wrk")
    env = {
        "GELOMBANG_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "GELOMBANG_MAX_INFLIGHT": str(MAX_INFLIGHT),
    }
    polite = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=10)
    )
    with ServeProcess("", tmp_path / "state", env=env) as serve:
        async with aiohttp.ClientSession(serve.url) as http:
            now = time.time()
            wave = {"opens_at": now - 5, "closes_at": now + 600, "admit_rate": 0.01,
                    "origin_url": ORIGIN}  # fmt: skip
            async with http.put("/admin/v1/waves/w", json=wave, headers=ADMIN) as r:
                assert r.status == 201
        async with polite.post(serve.url + "/api/v1/waves/w/join", json={"registrant": "p"}) as r:
            ticket = (await r.json())["ticket"]  # and the polite client's connection is open
        await asyncio.sleep(1.2)  # the admission loop has a copy of the wave
        path = "/api/v1/waves/w/join"
        flood = await flood_on_its_own_cpu(
            serve.pid, wrk, f"-c{FLOOD_CONNECTIONS}", f"-d{FLOOD_S}s",
            "-s", str(LUA_DIR / "join.lua"), serve.url + path, "--", path, "flood",
        )  # fmt: skip
        try:
            await asyncio.sleep(FLOOD_ONSET_S)  # the flood is at full strength
            before = await scrape(polite, serve.url)
            until = time.monotonic() + PROBE_S
            result = await probe(polite, serve.url, ticket, until)
            after = await scrape(polite, serve.url)
            # after the probe, so that its client's loop is not busy with a hundred others
            refused_at_the_door = await extra_connections(serve.url, 100)
            rss = psutil.Process(serve.pid).memory_info().rss
            raw, _ = await asyncio.wait_for(flood.communicate(), FLOOD_S + 30)
            out = raw.decode()
        finally:
            await polite.close()
            if flood.returncode is None:
                flood.kill()
                await flood.wait()
        async with aiohttp.ClientSession() as http:  # the polite one is closed
            exposition = await scrape(http, serve.url)

    latencies = result["latencies"]
    assert isinstance(latencies, list) and len(latencies) >= 15, result
    assert_p99_under_target(latencies, before, after)
    # the flood was refused, fast and as documented: 503 overloaded with Retry-After
    assert "Non-2xx or 3xx responses" in out, out
    shed = [line for line in exposition.splitlines() if line.startswith("gelombang_shed_")]
    assert any(float(line.split()[-1]) > 0 for line in shed), shed
    # a newcomer is served or refused at once in the JSON shape, never left hanging
    for status, retry, code in refused_at_the_door:
        assert status == 200 or (status == 503 and retry and code == "overloaded"), status
    assert any(line.startswith("gelombang_shed_connections_total") and float(line.split()[-1]) > 0
               for line in shed), shed  # fmt: skip
    for status, retry, code in result["refusals"]:  # type: ignore[attr-defined]
        assert status == 503 and retry and code == "overloaded", (status, code)
    assert "saturated" in result["readiness"], result["readiness"]  # type: ignore[operator]
    assert rss < MAX_RSS_BYTES, rss


async def test_on_the_shipped_defaults_the_bounds_adapt_to_the_host(tmp_path: Path) -> None:
    """No bound pinned: 3,000 connections polling as fast as they can (ten times what this
    process keeps within its target), measured once the flood is at full strength. The requests
    the process takes keep p99 < 250 ms; the rest, open connections and newcomers alike, get a
    fast 503 + Retry-After; the bound it reports is its own, far below the flood."""
    wrk = require_tool("wrk", package="wrk")
    polite = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=10)
    )
    async with polite:
        flood = await adaptive_flood(polite, wrk, tmp_path)

    result, during = flood.polite, flood.readiness
    latencies = result["latencies"]
    assert isinstance(latencies, list) and len(latencies) >= 30, result
    assert_p99_under_target(latencies, *flood.expositions)
    for status, retry, code in result["refusals"]:  # type: ignore[attr-defined]
        assert status == 503 and retry and code == "overloaded", (status, code)
    assert "Non-2xx or 3xx responses" in flood.wrk_report, flood.wrk_report  # open ones: 503s
    # a newcomer is refused at once in the JSON shape, or served when one of the flood's
    # connections has just closed (the bound is a count, not a wall): never left hanging
    for status, retry, code in flood.newcomers:
        assert status == 200 or (status == 503 and retry and code == "overloaded"), status
    refused = sum(status == 503 for status, _, _ in flood.newcomers)
    assert refused >= 0.8 * len(flood.newcomers), flood.newcomers
    assert max(flood.newcomer_waits_s) < NEWCOMER_WAIT_S, sorted(flood.newcomer_waits_s)
    # the bound is the process's own, far below the flood, and shown to the load balancer
    assert during["max_connections"] < ADAPTIVE_FLOOD_CONNECTIONS / 2, during
    # held to it: the bound may fall by half in 50 ms, and the connections it retires close at
    # their next request, so one moment may be over it; most moments are not
    held = result["held"]
    assert isinstance(held, list) and held[len(held) // 2] <= 1.1, (held, during)
    assert "saturated" in result["readiness"], result["readiness"]  # type: ignore[operator]
    assert flood.rss < MAX_RSS_BYTES, flood.rss


@dataclass
class AdaptiveFlood:
    polite: dict[str, object]
    """What the polite client saw (probe)."""
    newcomers: list[tuple[int, str | None, str]]
    newcomer_waits_s: list[float]
    readiness: dict[str, int]
    """/readyz near the end of the flood."""
    rss: int
    wrk_report: str
    expositions: tuple[str, str]
    """The process's /metrics as the polite client starts and as it ends."""


async def adaptive_flood(polite: aiohttp.ClientSession, wrk: str, tmp_path: Path) -> AdaptiveFlood:
    """The flood of the test above, on a process started on the shipped defaults."""
    with ServeProcess("", tmp_path / "state", env=SHIPPED_DEFAULTS) as serve:
        async with aiohttp.ClientSession(serve.url) as http:
            now = time.time()
            wave = {"opens_at": now - 5, "closes_at": now + 600, "admit_rate": 0.01,
                    "origin_url": ORIGIN}  # fmt: skip
            async with http.put("/admin/v1/waves/w", json=wave, headers=ADMIN) as r:
                assert r.status == 201
        async with polite.post(serve.url + "/api/v1/waves/w/join", json={"registrant": "p"}) as r:
            ticket = (await r.json())["ticket"]  # and the polite client's connection is open
        async with polite.get(serve.url + "/readyz") as r:
            before = await r.json()
        assert before["adaptive"] is True, before
        tickets = tmp_path / "tickets.txt"
        tickets.write_text(ticket + "\n")
        await asyncio.sleep(1.2)  # the admission loop has a copy of the wave
        path = "/api/v1/waves/w/status"
        flood = await flood_on_its_own_cpu(
            serve.pid, wrk, f"-c{ADAPTIVE_FLOOD_CONNECTIONS}", f"-d{ADAPTIVE_FLOOD_S}s",
            "-s", str(LUA_DIR / "status.lua"), serve.url + path, "--", path, str(tickets),
        )  # fmt: skip
        try:
            # its first second (the kernel taking 3,000 connections at once) is as slow with a
            # pinned bound: measured from there on, as in the test above
            await asyncio.sleep(FLOOD_ONSET_S)
            before = await scrape(polite, serve.url)
            until = time.monotonic() + ADAPTIVE_FLOOD_S - FLOOD_ONSET_S - 1
            measured = asyncio.create_task(probe(polite, serve.url, ticket, until))
            await asyncio.sleep(2)  # the flood fills the listen queue behind the open ones
            waited: list[float] = []
            newcomers = await extra_connections(serve.url, 50, waited)
            result = await measured
            after = await scrape(polite, serve.url)
            async with polite.get(serve.url + "/readyz") as r:
                during = await r.json()
            rss = psutil.Process(serve.pid).memory_info().rss
            raw, _ = await asyncio.wait_for(flood.communicate(), ADAPTIVE_FLOOD_S + 30)
            out = raw.decode()
        finally:
            if flood.returncode is None:
                flood.kill()
                await flood.wait()

    return AdaptiveFlood(result, newcomers, waited, during, rss, out, (before, after))
