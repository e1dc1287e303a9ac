"""Guarantee 13 on real processes: three `gelombang serve` workers against one Redis, a real
Prometheus answering the autopilot's queries (constant PromQL here: `vector(5)` is an origin
five seconds slow; the convergence against a real origin scraped by Prometheus is in
test_autopilot_origin.py). Exactly one decision per wave per interval across the processes;
a breach lowers the wave's max_active and rate, visible in the admin view and `wave show`; a
missing signal holds and says so; an operator's change wins and is audited; advise mode
changes nothing."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from queue_service.keys import WaveKeys
from queue_service.redis_server import EmbeddedRedis, free_port
from tests.helpers.paths import REPO
from tests.helpers.processes import ServeProcess
from tests.helpers.prometheus import PrometheusProcess
from tests.helpers.support import ADMIN, ADMIN_TOKEN, ORIGIN

INTERVAL_S = 1.0


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    with PrometheusProcess(tmp_path_factory.mktemp("prometheus")) as process:
        yield process


@pytest.fixture(scope="module")
def serve(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    with ServeProcess(redis_server.url, tmp_path_factory.mktemp("serve"), workers=3) as process:
        yield process


async def put(
    http: aiohttp.ClientSession, serve: ServeProcess, wave: str, **fields: Any
) -> dict[str, Any]:
    now = time.time()
    body = {
        "opens_at": now - 10, "closes_at": now + 3600, "admit_rate": 4, "max_active": 40,
        "origin_url": ORIGIN, "session_ttl_s": 60, **fields,
    }  # fmt: skip
    async with http.put(f"{serve.url}/admin/v1/waves/{wave}", json=body, headers=ADMIN) as r:
        answer: dict[str, Any] = await r.json()
        assert r.status in (200, 201), answer
        return answer


def autopilot(
    prometheus: PrometheusProcess, latency: str, errors: str = "vector(0)"
) -> dict[str, Any]:
    return {
        "mode": "on", "prometheus_url": prometheus.url, "latency_query": latency,
        "latency_target_s": 2.0, "error_query": errors, "error_target": 0.02,
        "min_active": 5, "max_active": 100, "interval_s": INTERVAL_S, "manual_hold_s": 600,
    }  # fmt: skip


async def view(http: aiohttp.ClientSession, serve: ServeProcess, wave: str) -> dict[str, Any]:
    async with http.get(f"{serve.url}/admin/v1/waves/{wave}", headers=ADMIN) as response:
        answer: dict[str, Any] = await response.json()
        return answer


async def decisions(redis_url: str, wave: str) -> list[dict[str, str]]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = await client.xrange(WaveKeys(wave).prefix + "ap:log")
    finally:
        await client.aclose()
    return [dict(fields) for _, fields in entries]


async def test_exactly_one_decision_per_interval_across_processes_and_a_breach_cuts_back(
    serve: ServeProcess, prometheus: PrometheusProcess, redis_server: EmbeddedRedis
) -> None:
    async with aiohttp.ClientSession() as http:
        await put(http, serve, "slow", autopilot=autopilot(prometheus, "vector(5)"))
        await asyncio.sleep(8.5 * INTERVAL_S)
        log = [d for d in await decisions(redis_server.url, "slow") if "index" in d]
        current = await view(http, serve, "slow")
    indexes = [int(d["index"]) for d in log]
    assert len(indexes) == len(set(indexes)), "two decisions in one interval"
    assert len(indexes) >= 6  # one an interval while the wave ran (a process is always up)
    gaps = [b - a for a, b in itertools.pairwise(indexes)]
    assert all(gap >= 1 for gap in gaps) and sum(gaps) - len(gaps) <= 1  # none skipped but one
    # a latency of 5 s against a target of 2: cut, waiting half a session between cuts
    decreases = [d for d in log if d["action"] == "decrease"]
    assert decreases and all(d["applied"] == "1" for d in decreases)
    targets = [int(d["target"]) for d in decreases]
    assert targets[0] == 20 and targets == sorted(targets, reverse=True)  # 40 -> x0.5 -> ...
    assert current["wave"]["max_active"] == targets[-1]
    assert current["wave"]["admit_rate"] == pytest.approx(float(log[-1]["rate"]))
    ap = current["autopilot"]
    assert ap["target_active"] == targets[-1] and ap["signals"]["latency_s"] == 5.0
    assert "over target" in (ap["last_decision"]["reason"] or "") or ap["last_decision"][
        "action"
    ] in ("hold", "decrease")


async def test_a_missing_signal_holds_the_last_target_and_says_so(
    serve: ServeProcess, redis_server: EmbeddedRedis
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing answers there
    config = {"mode": "on", "prometheus_url": dead, "min_active": 5, "max_active": 100,
              "interval_s": INTERVAL_S}  # fmt: skip
    async with aiohttp.ClientSession() as http:
        await put(http, serve, "blind", autopilot=config)
        await asyncio.sleep(3.5 * INTERVAL_S)
        current = await view(http, serve, "blind")
        async with http.get(f"{serve.url}/metrics") as response:
            exposition = await response.text()
    log = await decisions(redis_server.url, "blind")
    assert log and all(d["action"] == "stale" for d in log)
    assert current["wave"]["max_active"] == 40  # never opened: the configured value stands
    assert current["autopilot"]["signals"]["stale"] is True
    assert 'gelombang_autopilot_signal_stale{wave="blind"} 1.0' in exposition


async def test_an_operators_change_wins_at_once_and_is_audited(
    serve: ServeProcess, prometheus: PrometheusProcess, redis_server: EmbeddedRedis
) -> None:
    async with aiohttp.ClientSession() as http:
        await put(http, serve, "manual", autopilot=autopilot(prometheus, "vector(5)"))
        await asyncio.sleep(2.5 * INTERVAL_S)
        async with http.put(
            f"{serve.url}/admin/v1/waves/manual", json={"max_active": 77}, headers=ADMIN
        ) as response:
            assert response.status == 200
        await asyncio.sleep(3.5 * INTERVAL_S)
        current = await view(http, serve, "manual")
    assert current["wave"]["max_active"] == 77  # applied at once, and it stands
    assert current["autopilot"]["hold_until"] is not None
    log = await decisions(redis_server.url, "manual")
    manual_at = next(i for i, d in enumerate(log) if d["action"] == "manual")
    assert log[manual_at]["actor"].startswith("admin@")  # who changed what
    after = [d["action"] for d in log[manual_at + 1 :]]
    assert after and set(after) == {"manual_hold"}
    assert all(d["actor"].startswith("autopilot@") for d in log if d["action"] != "manual")


async def test_advise_mode_publishes_the_recommendation_and_changes_nothing(
    serve: ServeProcess, prometheus: PrometheusProcess, redis_server: EmbeddedRedis
) -> None:
    config = {**autopilot(prometheus, "vector(5)"), "mode": "advise"}
    async with aiohttp.ClientSession() as http:
        await put(http, serve, "advice", autopilot=config)
        await asyncio.sleep(2.5 * INTERVAL_S)
        current = await view(http, serve, "advice")
    log = await decisions(redis_server.url, "advice")
    assert any(d["action"] == "decrease" and d["applied"] == "0" for d in log)
    assert current["wave"]["max_active"] == 40 and current["wave"]["admit_rate"] == 4
    assert current["autopilot"]["target_active"] < 40  # what it would do, published


async def test_wave_show_says_what_the_autopilot_does(
    serve: ServeProcess, prometheus: PrometheusProcess
) -> None:
    async with aiohttp.ClientSession() as http:
        await put(http, serve, "shown", autopilot=autopilot(prometheus, "vector(5)"))
    await asyncio.sleep(1.5 * INTERVAL_S)
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gelombang.cli", "wave", "show", "shown", "--url", serve.url],
        capture_output=True, text=True, timeout=30, cwd=REPO,
        env={**os.environ, "GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "autopilot:" in shown.stdout and "mode on: target" in shown.stdout
    assert "p95 5.00 s (target 2 s)" in shown.stdout
    assert (
        "last decision: decrease" in shown.stdout or "last decrease has not shown" in shown.stdout
    )
