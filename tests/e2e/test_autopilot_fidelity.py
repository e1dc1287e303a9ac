"""The offline model's autopilot against a live one: the same wave, the same seed.

Live: a real redis-server, `gelombang serve` (its autopilot loop reading a real Prometheus),
the sample origin configured from the scenario (`gelombang origin --scenario`) and scraped by
Prometheus every second, the live driver running `tests/helpers/scenarios/autopilot-live.toml`
for 60 s; 32 s in, the origin loses half its workers (`PUT /api/v1/admin/capacity`, timed from
the driver's start: the scenario's `capacity_schedule`). Model: `autopilot_sweep.autopilot_run`
of the same scenario and seed (its Prometheus is `CapacityOrigin.health`).

Compared: registrations completed, admissions/s over the open wave, the autopilot's mean
target over the run's last 15 s (after the halving has settled) and the origin's 5xx share;
and the shape: both hold the wave's 38 until the halving and cut within three intervals of it.

Tolerances from the live run's own spread: six live runs (this machine, shared with other
work, 2026-12-07, seed 11) completed 396, 325, 367, 410, 430 and 410 registrations (mean 390;
each within 17% of it), admitted 7.55, 6.15, 6.96, 7.75, 8.17 and 7.77 per second (mean 7.39,
within 17%), settled at a target of 8.4 to 9.0, and the origin failed 0.05% to 0.18% of its
requests; the model: 354 completed and 6.74/s (9% under the live means: at 38 sessions on 24
workers the wave's sessions take longer in the model than live), a target of 8.0 (it stays at
the floor, 8, where live climbed a step before the end), 0.004% failed. So:

- completed, admissions/s: +-20%. The live spread alone is 17%; the worst gap seen to one run
  was 17.7% (430 completed): the margin is thin, and says that the model is a little slow
  here, not that the live runs agree more closely than that;
- the settled target: within 1.5 sessions (one step of the law at that size is 1; the live runs
  spanned 0.6), or as far apart as the cuts after the halving can put them. With the law's
  signal window and its climb-back (both measured after these figures) a second cut may come
  on one side and not the other, and each cut is mild (x0.7) or severe (x0.5, the p95 over
  twice its target): threshold crossings on one reading. Live runs of 2026-12-07 settled at
  27.2 (38 -> 26 -> 27, a cut fewer than the model's 38 -> 26 -> 18) and at 9.8 (38 -> 19 -> 9
  -> 11, both cuts severe, against the model's 38 -> 26 -> 18 -> 22, both mild, settled at
  19.6); other runs agreed within a session. Two cuts of different severity bound the gap:
  (0.5 / 0.7)^2 = 0.51 (one cut more and the increase after it, 0.7 / 1.1 = 0.64, is within
  it). The live side is bimodal here, and the model sits between its modes;
- the origin's 5xx share: both under the autopilot's error target (2%) and within 1
  percentage point (seen: under 0.2% on both sides).

The scenario's latency target is 3 s, not the default 2 s: 38 sessions on 24 workers read a p95
of about 2 s in the model, so with 2 s a model run decreased at the opening's spike where the
live run did not, a knife edge that says nothing about fidelity.
"""

from __future__ import annotations

import asyncio
import re
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest
import redis.asyncio as aioredis

from queue_service.autopilot import DECREASE, SEVERE_DECREASE
from queue_service.keys import WaveKeys
from queue_service.redis_server import EmbeddedRedis
from simulator import fidelity
from simulator.autopilot_sweep import Run, autopilot_run
from simulator.driver import DriverConfig, LiveResult, run_live
from simulator.scenario import Scenario, load_scenario, scenario_from_dict
from tests.helpers.paths import TEST_SCENARIOS
from tests.helpers.processes import GelombangProcess, ServeProcess
from tests.helpers.prometheus import PrometheusProcess
from tests.helpers.support import ADMIN_TOKEN

SCENARIO = TEST_SCENARIOS / "autopilot-live.toml"
LIVE_SECONDS = 60.0
CLOSES_S = 58.0
SETTLED_FROM_S = 45.0
ORIGIN_ADMIN_TOKEN = "origin-admin-" + "o" * 20
RATIO_TOLERANCE = 0.20
ERROR_TARGET = 0.02
"""The scenario's autopilot error target."""
TARGET_TOLERANCE = 1.5
ERROR_SHARE_TOLERANCE = 0.01

pytestmark = [pytest.mark.timeout(240), pytest.mark.exclusive]


@dataclass(frozen=True)
class LiveAutopilot:
    result: LiveResult
    decisions: list[tuple[float, int]]
    """(seconds since the driver's start, target) of every decision."""
    origin_requests: float
    origin_errors: float


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(SCENARIO)


def with_prometheus(url: str) -> Scenario:
    data = tomllib.loads(SCENARIO.read_text("utf-8"))
    data["wave"]["autopilot"]["prometheus_url"] = url
    return scenario_from_dict(data, str(SCENARIO))


async def halve_at(origin_url: str, at_s: float, capacity: int) -> None:
    await asyncio.sleep(at_s)
    async with (
        aiohttp.ClientSession() as http,
        http.put(
            origin_url + "/api/v1/admin/capacity",
            json={"capacity": capacity},
            headers={"Authorization": f"Bearer {ORIGIN_ADMIN_TOKEN}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()


async def origin_counts(origin_url: str) -> tuple[float, float]:
    """(requests, of which 5xx) from the origin's own counters."""
    async with aiohttp.ClientSession() as http, http.get(origin_url + "/metrics") as response:
        text = await response.text()
    total = errors = 0.0
    pattern = r'^gelombang_origin_requests_total\{[^}]*status_class="(\dxx)"[^}]*\} (\S+)$'
    for status_class, value in re.findall(pattern, text, re.M):
        total += float(value)
        errors += float(value) if status_class == "5xx" else 0.0
    return total, errors


async def decisions_of(redis_url: str, wave: str, started_wall: float) -> list[tuple[float, int]]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = await client.xrange(WaveKeys(wave).prefix + "ap:log")
    finally:
        await client.aclose()
    return [
        (int(entry_id.split("-")[0]) / 1000 - started_wall, int(fields["target"]))
        for entry_id, fields in entries
        if fields.get("action") not in (None, "manual")
    ]


async def live_run(scenario: Scenario, serve: ServeProcess, origin: GelombangProcess,
                   redis_url: str) -> LiveAutopilot:  # fmt: skip
    config = DriverConfig(
        mode="queued",
        origin_url=origin.url,
        queue_url=serve.url,
        max_registrants=5000,
        max_seconds=LIVE_SECONDS,
        seed=scenario.seed,
        admin_token=ADMIN_TOKEN,
        progress=None,
    )
    (halved_at, capacity), = scenario.origin.capacity_schedule  # fmt: skip
    started_wall = time.time()
    halving = asyncio.create_task(halve_at(origin.url, halved_at, capacity))
    result = await run_live(scenario, config)
    await halving
    requests, errors = await origin_counts(origin.url)
    decisions = await decisions_of(redis_url, scenario.wave.id, started_wall)
    return LiveAutopilot(result, decisions, requests, errors)


@pytest.fixture(scope="module")
def live(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAutopilot]:
    root = tmp_path_factory.mktemp("autopilot-fidelity")
    with EmbeddedRedis(root / "redis", appendonly=False) as redis:
        serve = ServeProcess(
            redis.url,
            root,
            env={"GELOMBANG_RATE_LIMITS": "on", "GELOMBANG_TRUSTED_PROXIES": "127.0.0.1/32"},
        )
        with serve:
            origin = GelombangProcess(
                ["origin", "--scenario", str(SCENARIO), "--wave", scenario.wave.id,
                 "--jwks-url", serve.url + "/.well-known/jwks.json"],
                root / "origin.log",
                ready_path="/healthz",
                env={"GELOMBANG_ORIGIN_ADMIN_TOKEN": ORIGIN_ADMIN_TOKEN},
            )  # fmt: skip
            with origin:
                targets = [("origin", f"127.0.0.1:{origin.port}")]
                with PrometheusProcess(root / "prometheus", targets) as prometheus:
                    wave = with_prometheus(prometheus.url)
                    yield asyncio.run(live_run(wave, serve, origin, redis.url))


@pytest.fixture(scope="module")
def model(scenario: Scenario) -> Run:
    return autopilot_run(scenario)


def settled_target(decisions: list[tuple[float, int]]) -> float:
    targets = [target for t, target in decisions if SETTLED_FROM_S <= t < LIVE_SECONDS]
    assert targets, decisions
    return sum(targets) / len(targets)


def test_model_and_live_autopilot_agree(live: LiveAutopilot, model: Run) -> None:
    modelled_decisions = [(d.t, d.target) for d in model.record.autopilot]
    measured = {
        "completed": float(live.result.record.totals.completed),
        "admissions_per_s": fidelity.admissions_per_s(live.result.record, 5.0, CLOSES_S),
        "settled_target": settled_target(live.decisions),
        "origin_error_share": live.origin_errors / max(live.origin_requests, 1.0),
    }
    predicted = {
        "completed": float(model.record.totals.completed),
        "admissions_per_s": fidelity.admissions_per_s(model.record, 5.0, CLOSES_S),
        "settled_target": settled_target(modelled_decisions),
        "origin_error_share": model.origin.errors / max(model.origin.requests, 1.0),
    }
    print({name: (predicted[name], measured[name]) for name in measured})
    print("live decisions", live.decisions)
    print("model decisions", modelled_decisions)
    for name in ("completed", "admissions_per_s"):
        assert abs(predicted[name] / measured[name] - 1) <= RATIO_TOLERANCE, name
    # The settled targets agree, or lie as far apart as the two cuts after the halving can put
    # them: whether a second cut comes, and whether each is severe, is a reading of the signal
    # against its target on one interval, a threshold crossing neither side can predict of the
    # other (the module's docstring gives the runs).
    low, high = sorted((predicted["settled_target"], measured["settled_target"]))
    cuts_apart = low >= high * (SEVERE_DECREASE / DECREASE) ** 2 - TARGET_TOLERANCE
    assert high - low <= TARGET_TOLERANCE or cuts_apart, (low, high)
    for side in (predicted, measured):
        assert side["origin_error_share"] < ERROR_TARGET
    gap = abs(predicted["origin_error_share"] - measured["origin_error_share"])
    assert gap <= ERROR_SHARE_TOLERANCE


def test_both_hold_until_the_halving_and_cut_within_three_intervals(
    live: LiveAutopilot, model: Run, scenario: Scenario
) -> None:
    """Live decisions fall where Redis time's intervals do, anywhere within an interval of the
    model's, and the halving shows in the 6 s window after a scrape or two: the cut comes
    within two intervals of the signal plus one of alignment (seen live: 4.7-5.1 s after)."""
    (halved_at, _), = scenario.origin.capacity_schedule  # fmt: skip
    interval = scenario.autopilot.interval_s
    start = scenario.wave.max_active
    modelled = [(d.t, d.target) for d in model.record.autopilot]
    for side, decisions in (("live", live.decisions), ("model", modelled)):
        early = [(t, target) for t, target in decisions if t < halved_at and target != start]
        assert not early, (side, early)
        cut = min(t for t, target in decisions if target < start)
        assert halved_at <= cut <= halved_at + 3 * interval, (side, cut, decisions)
