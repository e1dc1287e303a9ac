"""A real Prometheus scrapes a real queue service with an open wave, loads our recording and
alert rules, and answers queries for the key series and a recording rule's result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gelombang_harness import ChildProcess, stop_all
from tests.helpers.monitoring import as_promql, dashboard_expressions
from tests.helpers.paths import REPO
from tests.helpers.processes import ServeProcess
from tests.helpers.prometheus import PrometheusProcess

RULE_FILES = [REPO / "dashboards" / "rules" / "*.yml", REPO / "dashboards" / "alerts" / "*.yml"]
WAVE = "mon1"
JOINS = 40
ADMIT_RATE = 2.0  # slow enough that people are still waiting while Prometheus scrapes

pytestmark = pytest.mark.slow


@pytest.fixture
def queue_server(redis_url: str, state_dir: Path) -> Iterator[ServeProcess]:
    """`gelombang serve` as its own process, with one wave open since a few seconds ago."""
    now = int(time.time())
    config = state_dir / "waves.toml"
    config.write_text(
        f"""
[[waves]]
id = "{WAVE}"
opens_at = {now - 5}
closes_at = {now + 3600}
admit_rate = {ADMIT_RATE}
max_active = 0
session_ttl_s = 600
quota = 10000
abandon_after_s = 3600
origin_url = "http://127.0.0.1:9/daftar"
"""
    )
    with ServeProcess(redis_url, state_dir, config=config) as server:
        yield server


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    processes: list[ChildProcess] = []

    def start(queue_port: int) -> str:
        prometheus = PrometheusProcess(
            tmp_path / "prometheus",
            [("gelombang-queue", f"127.0.0.1:{queue_port}")],
            rule_files=RULE_FILES,
        )
        processes.append(prometheus)
        prometheus.start()
        return prometheus.url

    yield start
    stop_all(processes)


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def wait_for_value(
    session: aiohttp.ClientSession, base: str, promql: str, deadline: float
) -> float:
    """The first positive value of the (single-series) query, polling until the deadline."""
    while True:
        try:
            result = await query(session, base, promql)
        except aiohttp.ClientError:
            result = []  # Prometheus still starting
        if result and float(result[0]["value"][1]) > 0:
            return float(result[0]["value"][1])
        if time.monotonic() > deadline:
            raise AssertionError(f"no positive value for {promql} in time: {result}")
        await asyncio.sleep(0.5)


async def test_prometheus_scrapes_the_service_and_evaluates_our_rules(
    queue_server: ServeProcess, prometheus_for: Callable[[int], str]
) -> None:
    base = prometheus_for(queue_server.port)
    queue = queue_server.url
    deadline = time.monotonic() + 40
    async with aiohttp.ClientSession() as session:
        for i in range(JOINS):
            async with session.post(
                f"{queue}/api/v1/waves/{WAVE}/join", json={"registrant": f"mon-{i}"}
            ) as response:
                assert response.status == 201, await response.text()

        waiting = await wait_for_value(
            session,
            base,
            f'gelombang_queue_waiting{{job="gelombang-queue",wave="{WAVE}"}}',
            deadline,
        )
        assert 0 < waiting <= JOINS
        admitted = await wait_for_value(
            session, base, f'gelombang_admissions_total{{wave="{WAVE}"}}', deadline
        )
        assert admitted <= JOINS
        # Recording rules, evaluated by Prometheus on the scraped data.
        rate = await wait_for_value(
            session, base, f'wave:gelombang_admissions:rate1m{{wave="{WAVE}"}}', deadline
        )
        assert 0 < rate <= ADMIT_RATE * 3  # rate() extrapolates; bounded by admit_rate + burst
        assert await wait_for_value(
            session, base, f'wave:gelombang_wave_admit_rate:max{{wave="{WAVE}"}}', deadline
        ) == pytest.approx(ADMIT_RATE)
        state = await query(
            session, base, f'wave_state:gelombang_wave_state:max{{wave="{WAVE}"}} == 1'
        )
        assert [series["metric"]["state"] for series in state] == ["open"]
        joins = await query(
            session, base, f'sum(gelombang_joins_total{{wave="{WAVE}",result="new"}})'
        )
        assert float(joins[0]["value"][1]) == JOINS
        assert await wait_for_value(session, base, 'up{job="gelombang-queue"}', deadline) == 1

        # Every rule loaded and evaluates without error against the real series.
        async with session.get(f"{base}/api/v1/rules") as response:
            groups = (await response.json())["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert {group["name"] for group in groups} >= {"gelombang-wave", "gelombang-wave-alerts"}
        broken = [
            (rule["name"], rule.get("lastError")) for rule in rules if rule["health"] == "err"
        ]
        assert broken == []
        # Every dashboard query runs on the real data; the SRE's first panels show the wave.
        for where, expr in dashboard_expressions():
            result = await query(session, base, as_promql(expr))
            if "Queue length" in where or "Admissions per second" in where:
                assert {series["metric"].get("wave") for series in result} == {WAVE}, where

        # A wave admitting at its rate is not even pending for any wave alert.
        assert await query(session, base, f'ALERTS{{wave="{WAVE}"}}') == []
