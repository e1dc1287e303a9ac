"""`gelombang plan` sizes the whole system, and every number it prints is checked against what
it stands for: per-process figures against loadtests/RESULTS.md, polling against the service's
own `pacing.total_poll_rate`, the slot hold against the model run, the command against the
service's wave validation."""

from __future__ import annotations

import argparse
import re
import shlex
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient

from queue_service import pacing
from queue_service.commands import wave as wave_command
from simulator import sizing
from simulator.commands import plan
from simulator.measured import RESULTS
from simulator.model import run_model
from simulator.scenario import load_scenario
from tests.helpers.paths import REPO
from tests.helpers.support import ADMIN, ADMIN_TOKEN

JSON_BODY = {"Content-Type": "application/json"}


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


async def test_plan_prints_the_system_and_a_command_that_creates_the_wave(
    capsys: pytest.CaptureFixture[str], client: TestClient
) -> None:
    """The "apply it" command, as printed, creates a new wave (it used to lack opens_at,
    closes_at and origin_url), through the admin client's own request builder; and a run
    prints one line, not a line a second of "virtual time 0.0 h"."""
    parser = argparse.ArgumentParser()
    plan.add_arguments(parser)
    args = parser.parse_args(
        ["--scenario", "laptop", "--hours", "0.02", "--opens-at", "2030-01-01T12:00:00+07:00",
         "--origin-url", "http://127.0.0.1:9/daftar"]
    )  # fmt: skip
    assert plan.run(args) == 0
    captured = capsys.readouterr()
    out = captured.out
    for label in ("queue tier", "Redis", "origin", "people", "ETA prior"):
        assert label in out
    progress = [line for line in captured.err.splitlines() if line.startswith("  run ")]
    runs = {line.split(":")[0] for line in progress}
    assert len(progress) == len(runs), progress  # one line per run
    assert "virtual time" not in captured.err
    command = next(line.strip() for line in out.splitlines() if "gelombang wave put" in line)
    words = shlex.split(command)
    assert words[:4] == ["gelombang", "wave", "put", "laptop"]
    wave_cli = argparse.ArgumentParser()
    wave_command.add_arguments(wave_cli)
    request = wave_command.build_request(wave_cli.parse_args(words[2:]), ADMIN_TOKEN)
    assert request.data is not None
    created = await client.put(
        "/admin/v1/waves/laptop", data=request.data, headers={**ADMIN, **JSON_BODY}
    )
    assert created.status == 201, await created.text()
    view = (await created.json())["wave"]
    assert view["opens_at"] == "2030-01-01T05:00:00+00:00"
    assert view["closes_at"] == "2030-01-01T05:01:30+00:00"  # the scenario's 90 s wave
    assert view["origin_url"] == "http://127.0.0.1:9/daftar"
    assert view["max_active"] == 40 and view["expected_session_s"] > 1.0


def test_without_the_real_values_the_command_says_which_are_placeholders(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    plan.add_arguments(parser)
    assert plan.run(parser.parse_args(["--scenario", "laptop", "--hours", "0.02", "--quiet"])) == 0
    out = capsys.readouterr().out
    command = next(line for line in out.splitlines() if "gelombang wave put" in line)
    assert f"--set origin_url={sizing.PLACEHOLDER_ORIGIN}" in command
    assert "(origin_url: placeholders on registration.example; give --origin-url" in out
    opens = next(w for w in shlex.split(command) if w.startswith("opens_at="))
    assert datetime.fromisoformat(opens.split("=", 1)[1]) > datetime.now(UTC)
