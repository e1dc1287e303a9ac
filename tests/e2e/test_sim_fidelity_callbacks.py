"""Call-backs, the offline model against a live run of the same wave and seed (issue 24).

A real redis-server, `gelombang serve` (its outbox sending the wave's messages), the sample
origin, and the driver with its own SMS/WhatsApp gateway on loopback (signatures checked):
`tests/helpers/scenarios/callbacks.toml` for 50 s, the fidelity wave (max_active binds,
people balk, renege and come back) where 40 % of those who stay opt in, leave the page, and
come back by the return link a few seconds after their first message (one in ten never does).
The model runs the same scenario and seed with the origin's speed measured in the live run
(as tests/e2e/test_sim_fidelity.py does). Compared, each with one definition on both sides
(`simulator.callback_stats`, `simulator.fidelity`): people called back, the share of them back
in time, completed registrations, admissions/s. The tolerances, and what they rest on, are in
TOLERANCE below.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import pytest

from queue_service.redis_server import EmbeddedRedis
from simulator import fidelity
from simulator.driver import DriverConfig, LiveResult, run_live
from simulator.model import run_model
from simulator.records import RunRecord
from simulator.scenario import Scenario, load_scenario
from tests.e2e.test_sim_fidelity import with_measured_origin
from tests.helpers.paths import TEST_SCENARIOS
from tests.helpers.processes import GelombangProcess, ServeProcess
from tests.helpers.support import ADMIN_TOKEN

SCENARIO = TEST_SCENARIOS / "callbacks.toml"
SEED = 7
LIVE_SECONDS = 50.0
CLOSES_S = 46.0
WEBHOOK_SECRET = base64.b64encode(bytes(range(32))).decode()

TOLERANCE = {
    "called_back": 0.10,
    "in_time_share": 0.10,
    "completed": 0.10,
    "admissions_per_s": 0.10,
}

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
def model(scenario: Scenario, live: LiveResult) -> RunRecord:
    return run_model(with_measured_origin(scenario, live), seed=SEED, sample_every=1)


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
    assert totals["called_back"] > 0.8 * totals["opted_in"] * 0.9
    assert sum(totals["messages"].values()) <= 2 * totals["called_back"]


def test_model_and_live_agree_on_the_call_backs(live: LiveResult, model: RunRecord) -> None:
    measured, predicted = figures(live.record), figures(model)
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
