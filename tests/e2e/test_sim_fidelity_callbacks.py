"""Call-backs, the offline model against a live run of the same wave and seed (issue 24).

A real redis-server, `gelombang serve` (its outbox sending the wave's messages), the sample
origin, and the driver with its own SMS/WhatsApp gateway on loopback (signatures checked):
`tests/helpers/scenarios/callbacks.toml` for 50 s, the fidelity wave (max_active binds,
people balk, renege and come back) where 40 % of those who stay opt in, leave the page, and
come back by the return link a few seconds after their first message (one in ten never does).
The model runs the same scenario and seed with the origin's speed measured in the live run
(as tests/e2e/test_sim_fidelity.py does). Each figure has one definition on both sides
(`simulator.callback_stats`, `simulator.fidelity`).

Held, within +-10 %: people called back, and the share of them back in time, the live run
against the mean of the model over eight seeds. Measured (2026-12-07, load average 5-9 from
other work on the 2 cores, under the test lock): called back -1.3 %, back in time -3.7 %; at
load average 4, +2.0 % and -2.7 % (against one model seed, in earlier runs: +4.4 % / -3.9 %,
+5.5 % / +4.3 %, and once +15.4 %: one seed's opt-ins alone spread 442-517); live runs spread
425-444 called back and 77-83 % back in time.

Not held, printed only: completed registrations and admissions/s. Runs under the lock gave
+6.0 % / +4.1 % (eight seeds), +8.4 % / +7.8 % and +23.2 % / +18.4 % (one seed), the model above
live; against a ten-seed mean a run by hand gave +17.7 % / +14.9 %; the fidelity test without
call-backs, run between them at the same load, held +3.4 % / +2.2 %. What differs in the live
runs: flows took 1.23 s from the admission noticed to the registration against 1.02 s modelled
(from the same measured step times), and 52 admissions lapsed against 46 (holders who opted in
and were reached before their join's poll deadline: the queue admits them as present, and
their slot waits for that deadline). With max_active binding, slot time is admissions. Not
the driver's sleeps: a later run had flows of 0.85 s and the driver's loop late by 2.7 ms on
average. The flows follow what else the 2 cores do during the run; a tolerance wide enough for
every run would say nothing, so these two are reported, not asserted (docs/callbacks.md).
"""

from __future__ import annotations

import asyncio
import base64
import statistics
from collections.abc import Iterator

import pytest

from queue_service.redis_server import EmbeddedRedis
from simulator import fidelity
from simulator.callback_stats import away_s
from simulator.driver import DriverConfig, LiveResult, run_live
from simulator.model import run_model
from simulator.records import RunRecord
from simulator.scenario import Scenario, load_scenario
from simulator.stats import summarise
from simulator.summary import render_text
from tests.e2e.test_sim_fidelity import with_measured_origin
from tests.helpers.paths import TEST_SCENARIOS
from tests.helpers.processes import GelombangProcess, ServeProcess
from tests.helpers.support import ADMIN_TOKEN

SCENARIO = TEST_SCENARIOS / "callbacks.toml"
SEED = 7
LIVE_SECONDS = 50.0
CLOSES_S = 46.0
MODEL_SEEDS = range(SEED, SEED + 8)
WEBHOOK_SECRET = base64.b64encode(bytes(range(32))).decode()

TOLERANCE = {"called_back": 0.10, "in_time_share": 0.10}

pytestmark = [pytest.mark.timeout(180), pytest.mark.exclusive]


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(SCENARIO)


@pytest.fixture(scope="module")
def live(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveResult]:
    root = tmp_path_factory.mktemp("fidelity-callbacks")
    with EmbeddedRedis(root / "redis", appendonly=False) as redis:
        serve = ServeProcess(
            redis.url,
            root,
            env={
                "GELOMBANG_RATE_LIMITS": "on",
                "GELOMBANG_TRUSTED_PROXIES": "127.0.0.1/32",
                "GELOMBANG_WEBHOOK_SECRET": WEBHOOK_SECRET,
            },
        )
        with serve:
            origin = GelombangProcess(
                ["origin", "--scenario", str(SCENARIO), "--wave", scenario.wave.id,
                 "--jwks-url", serve.url + "/.well-known/jwks.json"],
                root / "origin.log",
                ready_path="/healthz",
            )  # fmt: skip
            with origin:
                config = DriverConfig(
                    mode="queued",
                    origin_url=origin.url,
                    queue_url=serve.url,
                    max_registrants=5000,
                    max_seconds=LIVE_SECONDS,
                    seed=SEED,
                    admin_token=ADMIN_TOKEN,
                    progress=None,
                    webhook_secret=WEBHOOK_SECRET,
                )
                yield asyncio.run(run_live(scenario, config))


@pytest.fixture(scope="module")
def models(scenario: Scenario, live: LiveResult) -> list[RunRecord]:
    """The model over MODEL_SEEDS: its draws are one stream, so any change of timing (the
    measured origin) reshuffles who balks, reneges and opts in; a single seed spreads as far as
    the tolerance (ten seeds: 422-473 called back), the mean of eight does not."""
    measured = with_measured_origin(scenario, live)
    return [run_model(measured, seed=seed, sample_every=1) for seed in MODEL_SEEDS]


def figures(record: RunRecord) -> dict[str, float]:
    totals = record.totals.callbacks
    assert totals is not None
    return {
        "called_back": float(totals["called_back"]),
        "in_time_share": totals["came_back_in_time"] / max(1, totals["called_back"]),
        "completed": float(record.totals.completed),
        "admissions_per_s": fidelity.admissions_per_s(record, record.meta.opens_at_s, CLOSES_S),
        "opted_in": float(totals["opted_in"]),
        "not_returned": float(totals["not_returned"]),
        "came_back_late": float(totals["came_back_late"]),
        "away_hours": float(totals["away_hours"]),
    }


def test_the_live_gateway_took_every_message_genuine(live: LiveResult) -> None:
    notes = " ".join(live.record.meta.notes)
    assert "0 forged" in notes and "0 to nobody listed" in notes, notes
    totals = live.record.totals.callbacks
    assert totals is not None and totals["opted_in"] > 200
    # most are told (everyone is within lead_s of the cursor soon after the opening), each
    # once or twice, never more
    assert totals["called_back"] > 0.5 * totals["opted_in"]
    assert sum(totals["messages"].values()) <= 2 * totals["called_back"]


def test_model_and_live_agree_on_the_call_backs(live: LiveResult, models: list[RunRecord]) -> None:
    measured = figures(live.record)
    runs = [figures(model) for model in models]
    predicted = {name: statistics.fmean(run[name] for run in runs) for name in measured}
    report = [
        f"{name}: model {predicted[name]:.3f} live {measured[name]:.3f} "
        f"({predicted[name] / measured[name] - 1:+.1%})"
        for name in measured
        if measured[name]
    ]
    print("\n".join(report))
    for name, tolerance in TOLERANCE.items():
        gap = predicted[name] / measured[name] - 1
        assert abs(gap) <= tolerance, f"{name}: {gap:+.1%} (+-{tolerance:.0%})"


def test_the_live_summary_shows_the_runs_own_call_backs(live: LiveResult) -> None:
    record = live.record
    opted = [o for o in record.registrants if o.opted_in_t is not None]
    called = [o for o in opted if o.notified_t is not None]
    in_time = [o for o in opted if o.returned_in_time]
    text = render_text([summarise(record)])
    lines = {line[:60].strip(): line[60:].strip() for line in text.splitlines()}
    assert lines["call-backs: opted in"] == f"{len(opted):,}"
    assert lines["called back"] == f"{len(called):,}"
    assert lines["came back in time"] == f"{len(in_time):,}"
    spared_h = sum(away_s(o, record.meta.duration_s) for o in opted) / 3600
    assert lines["person-hours of polling spared"] == f"{spared_h:.1f}"
