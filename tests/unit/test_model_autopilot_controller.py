"""The model's autopilot controller applies what the live loop applies, when it applies it:
mode `on` writes the target and rate into the wave's limits, `advise` only records; every
decision is in the run record and survives its JSON."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from simulator.model import run_model
from simulator.records import RunRecord
from simulator.scenario import Scenario, load_scenario
from tests.helpers.paths import TEST_SCENARIOS


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(TEST_SCENARIOS / "autopilot-live.toml")


@pytest.fixture(scope="module")
def run_on(scenario: Scenario) -> RunRecord:
    return run_model(scenario)


def test_one_decision_per_interval_from_the_start(scenario: Scenario, run_on: RunRecord) -> None:
    times = [d.t for d in run_on.autopilot]
    interval = scenario.autopilot.interval_s
    assert times[0] == 0.0
    assert all(b - a == pytest.approx(interval) for a, b in itertools.pairwise(times))
    assert run_on.autopilot[0].action == "stale"  # nobody served yet: no latency to read


def test_mode_on_applies_the_target_and_its_rate(scenario: Scenario, run_on: RunRecord) -> None:
    series = run_on.series
    planned_s = scenario.wave.session_estimate_s
    for d in run_on.autopilot:
        k = series.bin(d.t)
        if 5 <= d.t < 58:  # the open wave: the rate in force is the last decision's
            assert series.admit_rate_target[k] == pytest.approx(d.admit_rate)
        assert d.applied
        # Little's law, paced by the measured session, at most the planned one
        assert d.admit_rate == pytest.approx(d.target / min(d.session_s, planned_s))
    cut = next(d for d in run_on.autopilot if d.action == "decrease")
    later = [series.active[k] for k in range(series.bin(cut.t + 10), series.bin(58))]
    assert max(later) <= cut.target


def test_advise_records_and_applies_nothing(scenario: Scenario, run_on: RunRecord) -> None:
    advised = dataclasses.replace(
        scenario, autopilot=dataclasses.replace(scenario.autopilot, mode="advise")
    )
    record = run_model(advised)
    assert record.autopilot and not any(d.applied for d in record.autopilot)
    assert {d.action for d in record.autopilot} >= {"stale", "decrease"}
    series = record.series
    assert set(series.admit_rate_target[5:58]) == {scenario.wave.admit_rate}
    assert max(series.active) == scenario.wave.max_active


def test_without_the_autopilot_the_settings_stay(scenario: Scenario) -> None:
    record = run_model(scenario, autopilot=False)
    assert record.autopilot == []
    assert set(record.series.admit_rate_target[5:58]) == {scenario.wave.admit_rate}


def test_decisions_survive_the_records_json(run_on: RunRecord, tmp_path: Path) -> None:
    assert RunRecord.load(run_on.save(tmp_path / "run.json")) == run_on
