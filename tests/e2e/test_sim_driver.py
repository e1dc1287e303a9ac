"""A short live wave, twice, against real processes on loopback (redis-server, the queue
service, two sample origins): without a waiting room the origin is driven past its capacity;
through Gelombang it stays within capacity, everyone admitted completes, and admission keeps
join order."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import io
import itertools
import json
import re
import socket
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.autopilot_trace import AutopilotTrace, Decision, Sample
from simulator.callback_stats import away_s
from simulator.commands.demo import LocalStack
from simulator.driver import DriverConfig, LiveResult, admission_order, run_live
from simulator.records import RunRecord
from simulator.scenario import Scenario, scenario_from_dict
from simulator.stats import summarise
from simulator.summary import format_value
from tests.helpers.paths import REPO
from tests.helpers.tools import require_tool

LAPTOP = REPO / "simulator" / "scenarios" / "laptop.toml"
CAPACITY = 12
DIRECT_S = 12.0
QUEUED_S = 20.0

pytestmark = pytest.mark.timeout(120)


def short_wave() -> Scenario:
    """The laptop scenario shrunk to ~500 registrants over ~20 s, with a small origin. Nobody
    drops out mid-flow or is under age here, so every admitted registrant can finish, and
    tickets are never skipped as abandoned, so strict join order is checkable."""
    data: dict[str, Any] = copy.deepcopy(tomllib.loads(LAPTOP.read_text("utf-8")))
    data["name"] = "test-short"
    data["population"].update(size=500, underage_share=0.0, patience_median_s=600.0)
    data["clock"].update(opens_at_s=3.0, closes_at_s=60.0, duration_s=QUEUED_S)
    # Admission alone bounds the origin here: 12/s of ~0.5 s flows is ~6 requests in flight,
    # half the origin's capacity, so a busy test machine does not push it into timeouts.
    data["wave"].update(
        id="test-short",
        admit_rate=12.0,
        admit_burst=5.0,
        max_active=0,
        session_ttl_s=60.0,
        prequeue_s=3.0,
        abandon_after_s=60.0,
    )
    data["arrivals"].update(
        p_pre=0.1, p_spike=0.75, p_tail=0.15, p_last=0.0, tau_pre_s=1.0, pre_window_s=3.0,
        tau_spike_s=3.0, tau_tail_s=10.0,
    )  # fmt: skip
    data["behaviour"].update(in_flow_dropout=0.0, balk_scale_s=1e6)
    data["origin"].update(capacity=CAPACITY, timeout_s=3.0)
    data["origin"]["service_ms"] = {
        "account": 60.0, "ktp": 100.0, "otp_send": 40.0, "otp_verify": 30.0, "join": 50.0,
    }  # fmt: skip
    return scenario_from_dict(data, "test")


LiveRuns = tuple[dict[str, LiveResult], dict[str, str]]  # results, progress printed, by mode


@pytest.fixture(scope="module")
def live_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRuns]:
    scenario = short_wave()
    root = tmp_path_factory.mktemp("live")
    results: dict[str, LiveResult] = {}
    progress: dict[str, str] = {}
    with LocalStack(scenario, root / "state", root / "logs") as stack:
        for mode, origin_url, seconds in (
            ("direct", stack.direct_origin_url, DIRECT_S),
            ("queued", stack.protected_origin_url, QUEUED_S),
        ):
            printed = io.StringIO()
            config = DriverConfig(
                mode=mode,
                origin_url=origin_url,
                queue_url=stack.queue_url,
                max_registrants=600,
                max_seconds=seconds,
                admin_token=stack.admin_token,
                progress=printed,
            )
            results[mode] = asyncio.run(run_live(scenario, config))
            progress[mode] = printed.getvalue()
        yield results, progress


@pytest.fixture(scope="module")
def runs(live_runs: LiveRuns) -> dict[str, LiveResult]:
    return live_runs[0]


def test_without_a_waiting_room_the_origin_is_driven_past_capacity(
    runs: dict[str, LiveResult],
) -> None:
    record = runs["direct"].record
    totals = record.totals
    assert totals.arrived >= 300
    assert record.meta.origin_capacity == CAPACITY
    assert totals.peak_origin_inflight == CAPACITY  # saturated, and never above
    assert totals.origin_errors + totals.origin_timeouts >= 50
    assert sum(o.errors > 0 for o in record.registrants) >= 50
    # Overload wastes work: fewer than half of those who arrived got through.
    assert totals.completed < 0.5 * totals.arrived


def test_through_gelombang_the_origin_stays_within_capacity_without_overload(
    runs: dict[str, LiveResult],
) -> None:
    record = runs["queued"].record
    totals = record.totals
    assert totals.joined >= 300
    assert totals.origin_errors == 0
    assert totals.origin_timeouts == 0
    assert 0 < totals.peak_origin_inflight <= CAPACITY
    assert totals.completed >= 100
    assert totals.completed > runs["direct"].record.totals.completed


def test_every_admitted_registrant_completed_and_called_complete(
    runs: dict[str, LiveResult],
) -> None:
    result = runs["queued"]
    end = result.stats.wall_s
    admitted = [o for o in result.record.registrants if o.admitted_t is not None]
    assert len(admitted) >= 100
    # Registrants who saw their admission in the last seconds may still be mid-flow.
    noticed = {a.index: a.noticed_t for a in result.stats.admissions}
    assert set(noticed) == {o.index for o in admitted}
    settled = [o for o in admitted if noticed[o.index] < end - 3.0]
    assert settled
    unfinished = [o for o in settled if o.completed_t is None]
    assert not unfinished, (unfinished[:5], result.stats.give_up_details)
    # ... and told the queue, freeing the session (the last second's calls may be cut off).
    finished = {o.index for o in admitted if o.completed_t is not None and o.completed_t < end - 1}
    assert finished <= result.stats.completed_at_queue
    assert result.stats.complete_failures == 0


def test_post_opening_admission_order_matches_join_order(runs: dict[str, LiveResult]) -> None:
    admissions = runs["queued"].stats.admissions
    check = admission_order(admissions)
    assert check.admitted >= 50
    assert check.overtaken_pairs == 0
    assert check.tau_b is not None and check.tau_b > 0.8
    assert check.prequeue_first
    # The queue's ticket order is the order in which the driver saw joins succeed.
    later = sorted((a for a in admissions if not a.prequeue), key=lambda a: a.ticket or 0)
    joined = [a.joined_t for a in later]
    inversions = sum(1 for x, y in itertools.pairwise(joined) if y < x - 0.5)
    assert inversions == 0
    # The report judges order on the same record: the queue's tickets and signed seconds
    fair = summarise(runs["queued"].record)["fairness"]
    assert fair["prequeue_admitted_first"] is check.prequeue_first is True
    assert fair["overtaken_pair_share"] == 0.0 and fair["max_rank_displacement"] == 0
    assert fair["tau_b"] == pytest.approx(check.tau_b, abs=1e-3)
    served = [o for o in runs["queued"].record.registrants if o.first_served_t is not None]
    assert served and all(o.first_served_t >= o.admitted_t for o in served)  # type: ignore[operator]


def test_the_last_progress_line_tells_the_summarys_numbers(live_runs: LiveRuns) -> None:
    results, progress = live_runs
    still_trying = 0
    for mode, result in results.items():
        lines = progress[mode].splitlines()
        assert len(lines) >= 5, progress[mode]
        title = {"direct": "without Gelombang", "queued": "through Gelombang"}[mode]
        assert all(line.startswith(f"[{title} ") for line in lines)
        assert [line for line in lines if "] end: " in line] == [lines[-1]]
        shown = {
            name: int(value.replace(",", ""))
            for name, value in re.findall(
                r"(arrived|admitted|completed|gave up|still trying|5xx|timeouts|429) ([\d,]+)",
                lines[-1],
            )
        }
        peak, capacity = re.findall(r"origin peak (\d+)/(\d+) in flight", lines[-1])[0]
        summary = summarise(result.record)
        assert shown == {
            "arrived": summary["arrived"],
            "admitted": summary["admitted"],
            "completed": summary["completed"],
            "gave up": summary["gave_up_errors"]
            + summary["gave_up_balked_reneged"]
            + summary["gave_up_other"],
            "still trying": summary["still_trying_at_end"],
            "5xx": summary["origin_errors"],
            "timeouts": summary["origin_timeouts"],
            "429": summary["rate_limited"],
        }, lines[-1]
        assert (int(peak), int(capacity)) == (
            summary["peak_origin_inflight"],
            summary["origin_capacity"],
        )
        assert summary["peak_live_registrants"] == result.stats.peak_live_registrants > 0
        still_trying += summary["still_trying_at_end"]
    # Registrants cut off by the end of the run are told apart from those who gave up.
    assert still_trying > 0


@pytest.mark.timeout(240)
def test_demo_command_runs_both_ways_writes_the_report_and_stops_everything(
    tmp_path: Path,
) -> None:
    """Both runs, the origin halved halfway through each (18 s: 8 s after the opening), the
    run through Gelombang with the autopilot on (a real Prometheus). What it prints about the
    autopilot is what happened: the target is the one Redis holds at the end (the admin
    view) and the last the autopilot applied; the errors are the origin's own counters."""
    require_tool("prometheus", package="prometheus")
    out = tmp_path / "demo"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "gelombang.cli", "demo", "--out", str(out)),
            *("--max-seconds", "36", "--max-registrants", "700"),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "without Gelombang" in completed.stdout
    assert "through Gelombang" in completed.stdout
    assert "origin 5xx errors" in completed.stdout
    for name in ("run-direct.json", "run-queued.json", "report.json", "report.html"):
        assert (out / name).is_file(), name
    assert (out / "logs" / "waves.toml").is_file()
    # Every process it started is gone: nothing answers on the ports it announced (the
    # queue, two origins, Prometheus).
    ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", completed.stderr)]
    assert len(set(ports)) == 4
    for port in set(ports):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    # The autopilot's lines, against the trace the report kept.
    report = json.loads((out / "report.json").read_text())
    trace = AutopilotTrace(
        configured_max_active=40, capacity_before=24, capacity_after=12, capacity_drop_at_s=18.0
    )
    trace.samples = [Sample(**s) for s in report["autopilot"]["samples"]]
    trace.decisions = [Decision(**d) for d in report["autopilot"]["decisions"]]
    trace.final_target = report["autopilot"]["figures"]["final_target"]
    trace.unprotected_samples = [Sample(**s) for s in report["autopilot"]["unprotected_samples"]]
    lines = trace.lines()
    assert len(lines) == 3 or lines[1].startswith("autopilot: no cut"), lines
    for line in lines:
        assert line in completed.stdout
    # the comparison is with the same origin's counters in the run without Gelombang
    assert lines[-1].startswith("after the drop: the origin answered")
    assert {s.capacity for s in trace.unprotected_samples if s.t > 19} == {12}
    assert "autopilot on: the origin lost half its capacity at 18 s (24 -> 12 workers)" in (
        completed.stdout
    )
    # the capacity really halved (the origin's gauge), and the autopilot decided all along
    assert {s.capacity for s in trace.samples if s.t < 17} == {24}
    assert {s.capacity for s in trace.samples if s.t > 19} == {12}
    assert len(trace.decisions) >= 8
    # the target printed is Redis's at the end (the admin view, read just before the log: a
    # decision may come in between) and the last one the autopilot applied
    assert trace.final_target in {d.target for d in trace.decisions[-2:]}
    assert f"{trace.final_target} at the end" in completed.stdout
    html = (out / "report.html").read_text()
    assert 'id="chart-autopilot_target"' in html and 'id="autopilot"' in html
    assert_callback_figures(out, completed.stdout, html)


def assert_callback_figures(out: Path, stdout: str, html: str) -> None:
    """The demo's call-back lines (issue 24) are the run's own: people were messaged by the
    driver's gateway (signed with the stack's secret: nothing forged), came back in time, and
    the summary, report.json and page say what the run record of each registrant says."""
    record = RunRecord.load(out / "run-queued.json")
    opted = [o for o in record.registrants if o.opted_in_t is not None]
    called = sum(o.notified_t is not None for o in opted)
    in_time = sum(o.returned_in_time is True for o in opted)
    end_s = len(record.series) * record.series.step_s
    spared_h = round(sum(away_s(o, end_s) for o in opted) / 3600.0, 3)
    assert called > 0 and in_time > 0 and spared_h > 0, (len(opted), called, in_time)
    assert all(o.opted_in_t is None for o in RunRecord.load(out / "run-direct.json").registrants)
    messages = re.search(r"gateway took (\d+) messages \(0 to nobody listed, 0 forged\)",
                         " ".join(record.meta.notes))  # fmt: skip
    assert messages is not None, record.meta.notes
    assert int(messages[1]) >= called  # each told once, some twice (turn near, then come)
    queued, direct = json.loads((out / "report.json").read_text())["runs"][::-1]
    assert direct["callbacks"] is None  # no queue, nobody to call back
    figures = queued["callbacks"]
    assert (figures["called_back"], figures["came_back_in_time"]) == (called, in_time)
    assert figures["away_hours"] == spared_h
    share = round(in_time / called, 4)  # as the summary keeps it
    printed = {
        "called back": f"{called:,}",
        "came back in time": f"{in_time:,}",
        "came back in time, of those called back": format_value(share, "percent"),
        "person-hours of polling spared": format_value(spared_h, "ratio", 1),
    }
    for label, value in printed.items():
        assert re.search(rf"^{re.escape(label)}\s+–\s+{re.escape(value)}$", stdout, re.M), label
        assert label in html


def test_registrants_of_a_verified_wave_sign_in_at_the_origin_and_get_through(
    tmp_path: Path,
) -> None:
    """Verified joins end to end, as the Prakerja scenario runs them: every registrant signs
    in at the origin, joins with the enqueue token it was given, is admitted and registers;
    the wave takes no bare ids."""
    base = short_wave()
    scenario = dataclasses.replace(base, wave=dataclasses.replace(base.wave, verified_joins=True))
    with LocalStack(scenario, tmp_path / "state", tmp_path / "logs") as stack:
        config = DriverConfig(
            mode="queued",
            origin_url=stack.protected_origin_url,
            queue_url=stack.queue_url,
            max_registrants=120,
            max_seconds=15.0,
            admin_token=stack.admin_token,
            progress=None,
        )
        result = asyncio.run(run_live(scenario, config))
        bare = urllib.request.Request(
            f"{stack.queue_url}/api/v1/waves/{scenario.wave.id}/join",
            data=b'{"registrant": "3171011508900001"}',
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bare, timeout=10)
        refused.value.close()  # the error holds the open response
    assert refused.value.code == 401
    totals = result.record.totals
    assert totals.completed > 50, (totals, result.stats.give_up_details)
    assert not [d for d in result.stats.give_up_details if "sign-in" in d or "join 4" in d]
