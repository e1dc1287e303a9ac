"""`gelombang plan` sizes the whole system, and every number it prints is checked against what
it stands for: per-process figures against loadtests/RESULTS.md, polling against the service's
own `pacing.total_poll_rate`, the slot hold against the model run, the command against the
service's wave validation."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from queue_service import pacing
from queue_service.waves import parse_wave
from simulator import sizing
from simulator.commands import plan
from simulator.measured import RESULTS
from simulator.model import run_model
from simulator.scenario import load_scenario
from tests.helpers.paths import REPO


def test_the_planners_measured_figures_are_those_of_results_md() -> None:
    text = (REPO / "loadtests" / "RESULTS.md").read_text("utf-8")
    final = text[text.index("## Final figures") :]

    def number(pattern: str) -> float:
        found = re.search(pattern, final)
        assert found, pattern
        return float(found.group(1).replace(",", ""))

    assert RESULTS.status_per_process_s == number(r"\*\*status poll\*\*.*?\*\*([\d,]+) req/s")
    assert RESULTS.join_per_process_s == number(r"\*\*join\*\*.*?\*\*([\d,]+) req/s")
    assert RESULTS.p99_ms == number(r"status p99 at half saturation \| \*\*([\d.]+) ms")
    assert RESULTS.half_saturation_status_s == number(r"\*\* at ([\d,]+) req/s \(saturation")
    assert RESULTS.redis_bytes_per_ticket == number(r"\(([\d]+) B per ticket")
    assert RESULTS.requests_per_script_call == number(r"CPU/req; ([\d.]+) per script call")
    assert RESULTS.redis_us_per_join == number(r"\*\*([\d.]+) µs\*\* per join")
    assert RESULTS.redis_us_per_deadline == number(r"\*\*([\d.]+) µs\*\* per poll deadline")
    assert RESULTS.redis_us_per_admission_step == number(r"\*\*([\d.]+) µs\*\* per admission step")


def test_the_polling_load_is_the_services_own_sum() -> None:
    """A wave of polite holders only: the model's peak polls/s is total_poll_rate's."""
    scenario = load_scenario("laptop")
    polite = scenario.population_mix.__class__(
        **{**scenario.population_mix.__dict__, "bot_share": 0.0, "joki_share": 0.0,
           "manual_refresh_share": 0.0, "multi_tab_share": 0.0}
    )  # fmt: skip
    import dataclasses

    record = run_model(dataclasses.replace(scenario, population_mix=polite))
    peak = record.totals.peak_status_polls_per_s
    waiting = max(record.series.queue_length)
    # between the cheapest (everyone at the back) and the dearest (all at 1 s) bound
    assert peak is not None
    assert pacing.total_poll_rate(waiting, 1e9) >= peak > 0
    assert peak <= waiting / (pacing.MIN_POLL_MS / 1000)
    assert peak == pytest.approx(pacing.total_poll_rate(waiting, 14.0, 0.1), rel=0.5)


def test_sizing_follows_from_the_run_and_the_measured_figures() -> None:
    scenario = load_scenario("laptop")
    record = run_model(scenario)
    s = sizing.size(scenario, record, scenario.wave.admit_rate, scenario.wave.max_active)
    load = s.status_polls_per_s / RESULTS.status_per_process_s + (
        s.joins_per_s / RESULTS.join_per_process_s
    )
    assert (s.processes - sizing.SPARE_PROCESSES) * RESULTS.headroom >= load
    redis_us = (
        s.joins_per_s * RESULTS.redis_us_per_join
        + s.status_polls_per_s * RESULTS.redis_us_per_deadline
        + s.processes * sizing.ADMISSION_STEPS_PER_S * RESULTS.redis_us_per_admission_step
    )
    assert s.redis_core_share == pytest.approx(redis_us / 1e6)
    assert s.joins_per_s == pytest.approx(max(record.series.arrivals), rel=0.6)
    assert s.got_a_place == record.totals.admitted
    assert s.arrived - s.got_a_place >= s.refused
    # the hold is slot-seconds per admission: Little's law on the run
    busy = sum(record.series.active)
    assert s.mean_slot_hold_s == pytest.approx(busy / (record.totals.queue_admitted or 1))
    assert s.peak_sessions == scenario.wave.max_active


def test_plan_prints_the_system_and_a_command_the_service_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    plan.add_arguments(parser)
    args = parser.parse_args(["--scenario", "laptop", "--hours", "0.02", "--quiet"])
    assert plan.run(args) == 0
    out = capsys.readouterr().out
    for label in ("queue tier", "Redis", "origin", "people", "ETA prior"):
        assert label in out
    command = next(line.strip() for line in out.splitlines() if "gelombang wave put" in line)
    words = shlex.split(command)
    assert words[:4] == ["gelombang", "wave", "put", "laptop"]
    fields = dict(w.split("=", 1) for w in words[5::2])
    config = parse_wave(
        "laptop",
        {"opens_at": 2e9, "closes_at": 2e9 + 3600, "origin_url": "http://127.0.0.1:9/",
         **{k: float(v) if "." in v else int(v) for k, v in fields.items()}},
    )  # fmt: skip
    assert config.max_active == 40
    assert config.expected_session_s > 1.0
