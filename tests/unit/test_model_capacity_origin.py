"""The sample origin's capacity in the offline model (`simulator/model/capacity_origin.py`):
configured as `gelombang origin --scenario` configures the live one, healthy below its
capacity, failing above it as its worker pool, backlog and timeout make it fail, following
its schedule, and read as Prometheus would read it."""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest

from simulator.commands import origin as origin_command
from simulator.model.capacity_origin import (
    CapacityOrigin,
    capacity_origin,
    flow_service_times,
    sample_origin_config,
    window_of,
)
from simulator.model.origin_load import OriginQueue, TickLoad
from simulator.model.paced_flows import PacedFlows
from simulator.scenario import Scenario, ScenarioError, load_scenario, scenario_from_dict
from tests.helpers.paths import TEST_SCENARIOS

SCENARIO = TEST_SCENARIOS / "autopilot.toml"


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(SCENARIO)


def test_the_model_configures_the_origin_as_gelombang_origin_does(
    scenario: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    """Alike but for the schedule, which counts from the run's start: the live origin says so
    and follows it when given as a flag."""
    parser = argparse.ArgumentParser()
    origin_command.add_arguments(parser)
    args = parser.parse_args(["--scenario", str(SCENARIO), "--unprotected"])
    with caplog.at_level("WARNING", logger="gelombang.origin"):
        live = origin_command.origin_config(args)
    modelled = sample_origin_config(scenario.origin)
    assert dataclasses.replace(modelled, capacity_schedule=()) == live
    assert modelled.capacity_schedule == ((605.0, 12),)
    assert "--capacity-schedule 605:12" in caplog.text, caplog.text
    flagged = parser.parse_args(
        ["--scenario", str(SCENARIO), "--unprotected", "--capacity-schedule", "605:12"]
    )
    assert origin_command.origin_config(flagged) == modelled


def steady(origin: CapacityOrigin, sessions: int, capacity: int) -> TickLoad:
    """The origin's last second after 30 s with this many registrants in the flow."""
    queue = OriginQueue(
        origin.config, origin.service, origin.think_per_request_s, origin.mean_retry_delay_s
    )
    for _ in range(29):
        queue.run(sessions, capacity, 1.0)
    return queue.run(sessions, capacity, 1.0)


def test_below_its_capacity_the_origin_answers_at_its_service_time(scenario: Scenario) -> None:
    origin = capacity_origin(scenario)
    load = steady(origin, 5, 24)
    assert load.error_ratio < 1e-4
    assert load.slowdown < 1.05
    assert load.served_median_s == pytest.approx(origin.service.median_s, rel=0.05)
    # the closed loop: each registrant sends one request per think time plus answer
    cycle = origin.think_per_request_s + origin.service.mean_s
    assert load.served == pytest.approx(5 / cycle, rel=0.05)


def test_above_its_capacity_it_slows_then_serves_fewer_and_fails(scenario: Scenario) -> None:
    origin = capacity_origin(scenario)
    config, service = origin.config, origin.service
    pool_rate = 24 / service.mean_s  # requests per second the workers serve at no contention
    healthy, slow, failing, collapsed = (steady(origin, n, 24) for n in (30, 60, 100, 200))
    for load in (slow, failing, collapsed):
        assert load.served <= pool_rate * 1.001
        assert load.at_origin <= 24 + config.backlog + 1
    # a backlog first slows every worker (contention): answers late, fewer served...
    assert slow.served_p95_s > 2.0 > healthy.served_p95_s
    assert slow.served < 0.5 * healthy.served
    assert slow.error_ratio < 0.01
    # ...then past the timeout requests fail, and past the backlog they are refused at once
    assert failing.error_ratio > 0.2 and failing.timed_out == pytest.approx(failing.failed)
    assert collapsed.error_ratio > 0.8 and collapsed.failed > 2 * collapsed.timed_out
    assert collapsed.slowdown > 6 and collapsed.served < slow.served


def test_fewer_workers_answer_later(scenario: Scenario) -> None:
    origin = capacity_origin(scenario)
    full, half = (steady(origin, 30, c) for c in (24, 12))
    assert full.served_p95_s < 1.0 < 2.0 < half.served_p95_s
    assert half.served < 0.25 * full.served


def test_the_capacity_follows_the_schedule(scenario: Scenario) -> None:
    origin = capacity_origin(scenario)
    origin.advance(0.0, 0)
    assert origin.capacity == 24
    origin.advance(604.0, 10)
    assert origin.capacity == 24
    origin.advance(605.0, 10)
    assert origin.capacity == 12
    assert scenario.origin.capacity_at(10_000) == 12


def test_health_is_what_prometheus_shows_over_the_window(scenario: Scenario) -> None:
    origin = CapacityOrigin(scenario.origin, scenario.behaviour, window_s=10.0)
    assert origin.health().latency_s is None  # no traffic: NaN, the autopilot holds
    assert origin.health().error_ratio == 0.0
    for t in range(0, 20):
        origin.advance(float(t), 10)
    calm = origin.health()
    assert calm.latency_s is not None and calm.latency_s < 1.0
    assert calm.error_ratio < 1e-3
    for t in range(20, 26):
        origin.advance(float(t), 200)
    mixed = origin.health()
    assert mixed.error_ratio > 0.1
    # timed-out requests (4 s) in Prometheus's bucket (2.5 s, 5 s], interpolated as it does
    assert mixed.latency_s is not None and 2.5 < mixed.latency_s <= 5.0
    assert calm.latency_s == pytest.approx(0.87, abs=0.05)  # bucket (0.5, 1]: not 0.74 s
    for t in range(26, 40):
        origin.advance(float(t), 10)
    assert origin.health().error_ratio < 1e-3  # the overload has left the window


def test_the_window_is_the_querys_range() -> None:
    assert window_of("rate(x[1m])") == 60.0
    assert window_of("rate(x[10s]) / rate(y[10s])") == 10.0
    assert window_of("vector(5)") == 60.0


def test_service_times_mix_the_flows_steps(scenario: Scenario) -> None:
    service = flow_service_times(sample_origin_config(scenario.origin))
    assert service.median_s < service.mean_s < service.p95_s
    assert 0.15 < service.median_s < 0.45  # the steps' medians are 150-480 ms


def test_a_flow_started_in_an_overload_speeds_up_when_it_ends() -> None:
    flows = PacedFlows(requests_per_flow=5.0)
    flows.repace(0.0, 0.25, 0.0)  # a quarter of the no-load pace
    end = flows.start(0.0, ticket=1, base_s=2.0, failure_draw=math.inf)
    assert end == pytest.approx(8.0)
    failed, moved = flows.repace(2.0, 1.0, 0.0)  # half a second of progress made
    assert failed == [] and moved == [1]
    assert flows.flows[1].end_at == pytest.approx(3.5)


def test_a_flow_fails_when_the_errors_outlast_its_persistence() -> None:
    flows = PacedFlows(requests_per_flow=5.0)
    flows.repace(0.0, 1.0, 0.5)
    flows.start(0.0, ticket=1, base_s=2.0, failure_draw=0.1)  # fails after 0.1 of hazard
    flows.start(0.0, ticket=2, base_s=2.0, failure_draw=10.0)
    failed, _ = flows.repace(0.2, 1.0, 0.5)
    assert failed == [1]
    assert 2 in flows.flows


def test_a_scenario_names_its_autopilot_and_capacity_schedule(scenario: Scenario) -> None:
    assert scenario.autopilot.mode == "on"
    assert scenario.autopilot.interval_s == 10.0
    assert scenario.origin.capacity_schedule == ((605.0, 12),)
    plain = load_scenario("laptop")
    assert not plain.autopilot.enabled and plain.origin.capacity_schedule == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"wave": {"autopilot": {"mode": "on"}}}, "max_active"),
        ({"wave": {"autopilot": {"mode": "sometimes", "max_active": 5}}}, "mode"),
        ({"wave": {"autopilot": {"interval": 5}}}, "unknown fields"),
        ({"origin": {"capacity_schedule": [[10, 0]]}}, "capacity_schedule"),
        ({"origin": {"capacity_schedule": [[10, 2.5]]}}, "capacity_schedule"),
        ({"origin": {"capacity_schedule": 5}}, "capacity_schedule"),
    ],
)
def test_a_bad_autopilot_or_schedule_is_refused_naming_it(
    change: dict[str, dict[str, object]], message: str
) -> None:
    data: dict[str, object] = {"name": "bad", "population": {"size": 10}}
    data.update(change)
    with pytest.raises(ScenarioError, match=message):
        scenario_from_dict(data)
