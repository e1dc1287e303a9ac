"""`gelombang plan --autopilot`: every number it prints is what a model run with the bounds
it prints shows (the run is made here from the printed bounds alone, and the figures are
read from its record: the decisions, the completions, the origin's requests)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

import pytest

from simulator.autopilot_plan import latency_target_warning
from simulator.autopilot_sweep import Run, autopilot_run, capacity_phases
from simulator.commands import plan
from simulator.model.capacity_origin import capacity_origin
from simulator.scenario import load_scenario
from tests.helpers.paths import TEST_SCENARIOS

pytestmark = pytest.mark.slow  # three model runs of a 20-minute wave

SCENARIO = TEST_SCENARIOS / "autopilot.toml"
ROW = re.compile(
    r"^\s*(?P<start>[\d.]+)-(?P<end>[\d.]+) s\s+(?P<workers>\d+)\s+(?P<settles>\d+) s\s+"
    r"(?P<target>[\d.]+)\s+(?P<rate>[\d.]+)\s+(?P<goodput>[\d.]+)\s+(?P<errors>[\d.]+)%$"
)


def errors_between(run: Run, start: float, end: float) -> float:
    inside = [(n, e) for t, n, e in run.origin.history if start < t <= end]
    return sum(e for _, e in inside) / sum(n for n, _ in inside)


def test_plan_with_the_autopilot_prints_what_the_model_run_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    plan.add_arguments(parser)
    assert plan.run(parser.parse_args(["--scenario", str(SCENARIO), "--autopilot"])) == 0
    out = capsys.readouterr().out
    rows = [m.groupdict() for line in out.splitlines() if (m := ROW.match(line))]
    bounds = re.search(r"Bounds to set: min_active (\d+), max_active (\d+)", out)
    command = re.search(r"--set 'autopilot=(\{.*\})'", out)
    assert bounds is not None and command is not None and len(rows) == 2, out
    low, high = int(bounds.group(1)), int(bounds.group(2))
    assert json.loads(command.group(1))["min_active"] == low
    assert json.loads(command.group(1))["max_active"] == high
    assert f"--set max_active={high} " in out

    scenario = load_scenario(SCENARIO)
    config = dataclasses.replace(scenario.autopilot, min_active=low, max_active=high)
    wave = dataclasses.replace(scenario.wave, max_active=high)
    run = autopilot_run(dataclasses.replace(scenario, wave=wave, autopilot=config))
    decisions = run.record.autopilot
    assert all(low <= d.target <= high for d in decisions)
    limit = config.error_target
    for row, phase in zip(rows, capacity_phases(scenario), strict=True):
        assert (float(row["start"]), float(row["end"])) == (phase.start_s, phase.end_s)
        assert int(row["workers"]) == phase.capacity
        settled = phase.start_s + float(row["settles"])
        # settled: from this decision on the origin's errors stay within the target...
        assert errors_between(run, settled, phase.end_s) <= limit
        # ...and from the decision before it (in the phase) they did not
        earlier = [d.t for d in decisions if phase.start_s <= d.t < settled]
        if earlier:
            assert errors_between(run, earlier[-1], phase.end_s) > limit
        after = [d for d in decisions if settled <= d.t < phase.end_s]
        target = sum(d.target for d in after) / len(after)
        rate = sum(d.admit_rate for d in after) / len(after)
        assert float(row["target"]) == pytest.approx(target, abs=0.05)
        assert float(row["rate"]) == pytest.approx(rate, abs=0.005)
        assert float(row["errors"]) == pytest.approx(
            100 * errors_between(run, settled, phase.end_s), abs=0.005
        )
        series = run.record.series
        first, last = series.bin(phase.start_s), series.bin(phase.end_s - 1e-9)
        goodput = sum(series.completions[first : last + 1]) / ((last + 1 - first) * series.step_s)
        assert float(row["goodput"]) == pytest.approx(goodput, abs=0.005)
        assert low <= target <= high


def test_plan_needs_hours_without_the_autopilot(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    plan.add_arguments(parser)
    assert plan.run(parser.parse_args(["--scenario", "laptop"])) == 2
    assert "--hours" in capsys.readouterr().err


def test_a_latency_target_the_idle_origin_already_breaks_is_named() -> None:
    """An idle sample origin's p95 reads 0.87 s from its buckets (interpolated inside
    0.5-1 s): with a target of 1 s the healthy line is 0.8 s and the autopilot never grows."""
    scenario = load_scenario(SCENARIO)
    idle = capacity_origin(scenario).idle_latency_s()
    assert idle == pytest.approx(0.87, abs=0.01)
    one_s = dataclasses.replace(scenario.autopilot, latency_target_s=1.0)
    warning = latency_target_warning(one_s, idle)
    assert warning is not None and "0.80 s" in warning and "0.87 s" in warning
    assert latency_target_warning(scenario.autopilot, idle) is None  # 2 s: healthy below 1.6 s
