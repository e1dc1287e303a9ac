"""Locust rehearsals end to end: a real redis-server, a real `gelombang serve`, the real sample
origin protected by the queue's JWKS, and headless Locust runs (bounded users and seconds,
127.0.0.1 only) judged on their CSV/JSON stats and the verdict's exit code.

Locust is only ever run in a subprocess: importing it monkey-patches the process (gevent).
The verdict and curve logic is imported directly (`loadtests.verdict`, `loadtests.curves` do not
import Locust).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from loadtests import counters
from loadtests.curves import OpeningWindow, user_curve
from loadtests.stepping import BreakLimits, StepRecord, breaking_point, render_steps
from loadtests.targets import TargetRefused, check_target
from loadtests.verdict import (
    OriginSample,
    WaveSample,
    check_admission_rate,
    check_bots_rate_limited,
    check_origin_within_capacity,
    evaluate,
    render,
    wave_sample_from_metrics,
)
from queue_service.redis_server import EmbeddedRedis, free_port
from queue_service.subprocesses import ChildProcess, stop_all
from simulator.scenario import load_scenario

from processes import OriginProcess, ServeProcess
from support import ADMIN_TOKEN

REPO = Path(__file__).resolve().parents[1]
RUN_S = 15
VERDICT_FAILED = 3  # loadtests.checks.VERDICT_FAILED_EXIT_CODE (not imported: it imports Locust)


@dataclass(frozen=True)
class Stack:
    queue_url: str
    origin_url: str
    logs: Path


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    logs = tmp_path_factory.mktemp("loadtests")
    # Rate limits on (the bot check needs them); the wave set-up widens only per-IP limits.
    queue = ServeProcess(
        redis_server.url,
        logs,
        env={"GELOMBANG_RATE_LIMITS": "on", "GELOMBANG_SECRET": "loadtest-secret"},
    )
    queue.start()
    origin = OriginProcess(queue.url, logs / "origin.log")
    try:
        origin.start()
        yield Stack(queue.url, origin.url, logs)
    finally:
        origin.stop()
        queue.stop()


@dataclass(frozen=True)
class LocustRun:
    returncode: int
    output: str
    stats: list[dict[str, str]]  # rows of <prefix>_stats.csv
    json_stats: list[dict[str, object]]  # --json-file
    verdict: dict[str, object]

    def row(self, name: str) -> dict[str, str]:
        return next(r for r in self.stats if r["Name"] == name)

    def check(self, name: str) -> dict[str, object]:
        checks = self.verdict["checks"]
        assert isinstance(checks, list)
        return next(c for c in checks if c["name"] == name)


def locust_command(stack: Stack, out: Path, wave: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py",
            "--host", stack.queue_url, "--origin-url", stack.origin_url, "--wave", wave,
            "--only-summary", "--loglevel", "WARNING",
            "--verdict-file", str(out / "verdict.json"), *args]  # fmt: skip


def run_locust(stack: Stack, out: Path, wave: str, *args: str, timeout_s: float = 60) -> LocustRun:
    out.mkdir(parents=True, exist_ok=True)
    locust = locust_process(
        out / "locust.log",
        [*locust_command(stack, out, wave, "--headless", "--csv", str(out / "run"),
                         "--json-file", str(out / "run")), *args],
    )  # fmt: skip
    returncode = locust.run(timeout_s)
    return collect(out, returncode, locust.log_text())


def locust_process(log: Path, command: list[str]) -> ChildProcess:
    env = {**os.environ, "GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN}
    return ChildProcess("locust", command, log=log, env=env, cwd=REPO)


def collect(out: Path, returncode: int, output: str) -> LocustRun:
    stats_file = out / "run_stats.csv"
    stats = list(csv.DictReader(stats_file.read_text().splitlines())) if stats_file.exists() else []
    json_file = out / "run.json"
    json_stats = json.loads(json_file.read_text()) if json_file.exists() else []
    verdict_file = out / "verdict.json"
    verdict = json.loads(verdict_file.read_text()) if verdict_file.exists() else {}
    if returncode != 0:  # say which requests failed, or which task raised, and why
        for kind in ("failures", "exceptions"):
            found = out / f"run_{kind}.csv"
            if found.exists():
                output = f"{output}\n{kind}:\n{found.read_text()}"
    return LocustRun(returncode, output, stats, json_stats, verdict)


def queue_rows(run: LocustRun) -> list[dict[str, str]]:
    return [
        r for r in run.stats if r["Name"] != "Aggregated" and not r["Name"].startswith("origin")
    ]


# ---------------------------------------------------------------------------- live runs


def test_headless_rehearsal_registers_people_and_passes_every_check(
    stack: Stack, tmp_path: Path
) -> None:
    run = run_locust(
        stack, tmp_path, "lt-single",
        "-u", "20", "-r", "10", "-t", f"{RUN_S}s",
        "--admit-rate", "2", "--admin-change-after", "5", "--poll-cap-s", "1",
    )  # fmt: skip
    assert run.returncode == 0, run.output[-4000:]
    assert run.verdict["passed"] is True, run.verdict

    # Every user class ran and was answered correctly by the queue.
    assert int(run.row("Aggregated")["Request Count"]) > 200
    for row in queue_rows(run):
        assert row["Failure Count"] == "0", row
    assert int(run.row("/api/v1/waves/[wave]/join")["Request Count"]) >= 20
    assert int(run.row("/api/v1/waves/[wave]/status (bot)")["Request Count"]) > 0
    assert int(run.row("/w/[wave]")["Request Count"]) > 0
    assert int(run.row("/admin/v1/waves/[wave] (set admit_rate)")["Request Count"]) == 1

    # Admitted registrants went through the whole origin flow and completed their session.
    for step in ("account", "ktp", "otp_send", "otp_verify", "join"):
        assert int(run.row(f"origin {step}")["Request Count"]) > 0, step
    counts = run.verdict["counts"]
    assert isinstance(counts, dict)
    assert counts[counters.REGISTRATIONS_COMPLETED] > 0
    assert counts[counters.SESSIONS_COMPLETED] > 0
    assert counts.get(counters.QUEUE_5XX, 0) == 0

    # The JSON stats agree with the CSV ones.
    by_name = {(e["method"], e["name"]): e for e in run.json_stats}
    join = by_name[("POST", "/api/v1/waves/[wave]/join")]
    # (the JSON is written at exit, the CSV when the run stops: answers in flight may differ)
    assert join["num_requests"] >= int(run.row("/api/v1/waves/[wave]/join")["Request Count"])
    assert join["num_failures"] == 0

    # The checks measured something real: bots limited, admissions at the configured rate.
    assert run.check("bots_rate_limited")["skipped"] is False
    assert run.check("admission_rate")["skipped"] is False
    assert run.check("origin_within_capacity")["skipped"] is False


def test_a_failing_check_gives_a_non_zero_exit_code(stack: Stack, tmp_path: Path) -> None:
    # The same bots against a wave whose rate limits are off: nothing stops them, and the
    # verdict must fail the run even though every request "succeeded".
    run = run_locust(
        stack, tmp_path, "lt-no-limits",
        "-u", "3", "-r", "3", "-t", "5s", "--wave-rate-limits", "off",
        "BotUser",
    )  # fmt: skip
    assert run.returncode == VERDICT_FAILED, run.output[-4000:]
    assert run.verdict["passed"] is False
    assert run.check("bots_rate_limited")["passed"] is False
    assert run.check("queue_no_5xx")["passed"] is True
    assert int(run.row("Aggregated")["Request Count"]) > 0
    assert run.row("Aggregated")["Failure Count"] == "0"


def test_two_identical_rehearsals_give_the_same_verdict(stack: Stack, tmp_path: Path) -> None:
    """A gate is only worth something if it is repeatable: the same rehearsal (same users,
    same population seed, a wave of its own each) twice gives the same verdict, check by
    check, and each check measured something."""
    verdicts = []
    for n in (1, 2):
        run = run_locust(
            stack, tmp_path / f"run-{n}", f"lt-repeat-{n}",
            "-u", "20", "-r", "10", "-t", f"{RUN_S}s",
            "--admit-rate", "2", "--admin-change-after", "5", "--poll-cap-s", "1",
            "--population-seed", "4242",
        )  # fmt: skip
        checks = run.verdict["checks"]
        assert isinstance(checks, list), run.output[-4000:]
        verdicts.append(
            (run.returncode, run.verdict["passed"],
             [(c["name"], c["passed"], c["skipped"]) for c in checks])
        )  # fmt: skip
    assert verdicts[0] == verdicts[1], verdicts
    assert not any(skipped for _, _, skipped in verdicts[0][2]), verdicts[0]


def test_targets_are_loopback_unless_named() -> None:
    with pytest.raises(TargetRefused):
        check_target("http://10.1.2.3:8080", explicit=False, what="queue host")
    with pytest.raises(TargetRefused):
        check_target("ftp://127.0.0.1/", explicit=True, what="origin URL")
    assert check_target("http://10.1.2.3:8080/", explicit=True, what="queue host") == (
        "http://10.1.2.3:8080"
    )
    assert check_target("http://localhost:8080", explicit=False, what="queue host")
    assert check_target("http://[::1]:8080", explicit=False, what="queue host")


def test_wave_opening_shape_follows_the_scenario_curve(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path
    command = locust_command(stack, out, "lt-opening", "--headless", "--csv", str(out / "run"))
    command[command.index("loadtests/locustfile.py")] = "loadtests/wave_opening.py"
    locust = locust_process(
        out / "locust.log",
        [*command, "--peak-users", "12", "--shape-duration", "14", "--poll-cap-s", "1",
         # this run checks the shape: 14 s is too short to measure bots and admissions
         "--check-allow-skip", "bots_rate_limited,admission_rate"],
    )  # fmt: skip
    assert locust.run(timeout_s=60) == 0, locust.log_tail(4000)
    history = (out / "run_stats_history.csv").read_text().splitlines()
    users = [int(r["User Count"]) for r in csv.DictReader(history) if r["Name"] == "Aggregated"]
    peak = users.index(max(users))
    # Build-up, a spike near the scenario's opening (1/7 of the laptop window), then decay;
    # the history has one row a second, so the short spike may fall between two rows.
    assert max(users) >= 8
    assert users[0] < max(users) and users[-1] < max(users) / 2
    assert 0 < peak < len(users) - 2


@pytest.mark.slow
def test_distributed_master_and_two_workers_give_the_same_verdict(
    stack: Stack, tmp_path: Path
) -> None:
    master_port = free_port()
    master = locust_process(
        tmp_path / "master.log",
        locust_command(stack, tmp_path, "lt-distributed",
                       "--master", "--master-bind-host", "127.0.0.1",
                       "--master-bind-port", str(master_port),
                       "--headless", "-u", "20", "-r", "10", "-t", f"{RUN_S}s",
                       "--expect-workers", "2", "--expect-workers-max-wait", "30",
                       "--csv", str(tmp_path / "run"), "--json-file", str(tmp_path / "run"),
                       "--admit-rate", "2", "--admin-change-after", "5", "--poll-cap-s", "1",
                       "--population-seed", "4242"),
    )  # fmt: skip
    worker_command = [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py",
                      "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port),
                      "--loglevel", "WARNING"]  # fmt: skip
    workers = [locust_process(tmp_path / f"worker-{n}.log", worker_command) for n in range(2)]
    try:
        master.spawn()
        for worker in workers:
            worker.spawn()
        returncode = master.wait(timeout_s=90)
    finally:
        stop_all([master, *workers])
    run = collect(tmp_path, returncode, master.log_text())
    assert run.returncode == 0, run.output[-4000:]
    assert run.verdict["passed"] is True, run.verdict
    # Workers' own counts reached the master: the tally matches the aggregated CSV stats.
    counts = run.verdict["counts"]
    assert isinstance(counts, dict)
    queue_requests = sum(int(r["Request Count"]) for r in queue_rows(run))
    assert counts[counters.QUEUE_REQUESTS] == queue_requests > 200
    assert counts[counters.REGISTRATIONS_COMPLETED] > 0
    assert run.check("admission_rate")["skipped"] is False


# ---------------------------------------------------------------------------- verdict logic


def wave_samples(rate: float, admitted_per_s: float, seconds: int) -> list[WaveSample]:
    return [
        WaveSample(float(t), "open", int(admitted_per_s * t), 50, 0, rate, rate, 0)
        for t in range(seconds + 1)
    ]


def test_admission_check_fails_on_over_admission_and_on_a_stalled_queue() -> None:
    assert check_admission_rate(wave_samples(10, 10, 20), 0.2).passed
    over = check_admission_rate(wave_samples(10, 20, 20), 0.2)
    assert not over.passed and "more than" in over.detail
    stalled = check_admission_rate(wave_samples(10, 2, 20), 0.2)
    assert not stalled.passed and "achieved 2.00/s" in stalled.detail
    # No backlog (nobody waiting): a low rate is not a failure, and says so.
    idle = [WaveSample(float(t), "open", t, 0, 0, 10, 10, 0) for t in range(21)]
    result = check_admission_rate(idle, 0.2)
    assert result.passed and result.skipped


def test_origin_and_bot_checks_fail_when_they_should() -> None:
    calm = [OriginSample(0, 3, 50, 0, 0, 0), OriginSample(5, 10, 50, 0, 0, 0)]
    assert check_origin_within_capacity(calm).passed
    shed = [OriginSample(0, 3, 50, 0, 0, 0), OriginSample(5, 50, 50, 7, 2, 9)]
    assert not check_origin_within_capacity(shed).passed
    assert not check_origin_within_capacity(calm, seen_5xx=1).passed
    bots = {counters.BOT_REQUESTS: 100, counters.BOT_RATE_LIMITED: 30}
    assert not check_bots_rate_limited(bots, 0.5).passed
    assert check_bots_rate_limited(bots, 0.25).passed
    results = evaluate(
        {counters.QUEUE_REQUESTS: 10, counters.QUEUE_5XX: 1},
        [],
        calm,
        bot_limited_min=0.5,
        admission_tolerance=0.2,
        allow_skipped=frozenset({"bots_rate_limited", "admission_rate"}),
    )
    assert [r.name for r in results if not r.passed] == ["queue_no_5xx"]


def test_a_check_that_could_not_be_measured_fails_the_gate_unless_skipped_on_purpose() -> None:
    counts = {counters.QUEUE_REQUESTS: 10}
    calm = [OriginSample(0, 3, 50, 0, 0, 0), OriginSample(5, 10, 50, 0, 0, 0)]
    results = evaluate(counts, [], calm, bot_limited_min=0.5, admission_tolerance=0.2)
    unmeasured = {r.name: r for r in results if r.skipped}
    assert set(unmeasured) == {"bots_rate_limited", "admission_rate"}
    assert all(not r.passed and "not measured" in r.detail for r in unmeasured.values())
    assert "=> FAILED" in render(results) and "SKIP!" in render(results)
    allowed = evaluate(
        counts, [], calm, bot_limited_min=0.5, admission_tolerance=0.2,
        allow_skipped=frozenset({"bots_rate_limited", "admission_rate"}),
    )  # fmt: skip
    assert all(r.passed for r in allowed) and "=> PASSED" in render(allowed)


def test_wave_opening_curve_builds_up_spikes_at_opening_and_decays() -> None:
    scenario = load_scenario("laptop")
    window = OpeningWindow.of(scenario)
    curve = user_curve(scenario.arrival_process(), window, 100)
    peak = curve.index(max(curve))
    opening = (scenario.clock.opens_at_s - window.start_s) / (window.end_s - window.start_s)
    assert abs(peak / 100 - opening) <= 0.02  # the spike is at the opening
    assert curve[0] < 0.2 and curve[-1] < 0.1 and max(curve) == 1.0
    assert all(a <= b for a, b in itertools.pairwise(curve[: peak + 1]))  # build-up
    assert all(a >= b for a, b in itertools.pairwise(curve[peak:]))  # decay


def test_the_wave_can_be_sampled_from_the_queue_metrics_without_an_admin_token() -> None:
    def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (name, tuple(sorted(labels.items())))

    samples = {
        key("gelombang_wave_state", wave="w1", state="open"): 1.0,
        key("gelombang_wave_state", wave="w1", state="paused"): 0.0,
        key("gelombang_wave_admitted", wave="w1"): 42.0,
        key("gelombang_queue_waiting", wave="w1"): 7.0,
        key("gelombang_sessions_active", wave="w1"): 3.0,
        key("gelombang_wave_admit_rate", wave="w1"): 2.5,
        key("gelombang_wave_max_active", wave="w1"): 10.0,
        key("gelombang_wave_admitted", wave="other"): 1000.0,
    }
    sample = wave_sample_from_metrics(samples, "w1", 5.0)
    assert sample == WaveSample(5.0, "open", 42, 7, 3, 2.5, 2.5, 10)
    assert wave_sample_from_metrics(samples, "unknown", 5.0) is None


def test_stress_steps_report_the_first_step_over_the_limits() -> None:
    limits = BreakLimits(max_fail_ratio=0.01, max_p95_ms=100)
    steps = [
        StepRecord(1, 20, 10.0, 1000, 0, 12),
        StepRecord(2, 40, 10.0, 2000, 5, 40),
        StepRecord(3, 60, 10.0, 2100, 0, 250),  # throughput flat, latency up: broken
        StepRecord(4, 80, 10.0, 1500, 300, 900),
    ]
    found = breaking_point(steps, limits)
    assert found is not None and found[0].step == 3 and "p95 250 ms" in found[1]
    report = render_steps(steps, limits)
    assert "breaking point at step 3 (60 users)" in report
    assert "last step within limits: 40 users, 200.0 req/s" in report
    assert breaking_point(steps[:2], limits) is None
    assert breaking_point([StepRecord(1, 5, 1.0, 100, 2, 5)], limits) is not None  # 2% failed


def test_retry_after_is_read_from_the_fast_clients_headers() -> None:
    """Locust's fast client keeps (name, value) pairs in its header map: `dict(headers)` gave
    tuples, and the first Retry-After a registrant met crashed its task. Checked against the
    real header classes in a child process (importing them pulls in gevent)."""
    code = (
        "from geventhttpclient.header import Headers\n"
        "from requests.structures import CaseInsensitiveDict\n"
        "from loadtests.answers import plain_headers, retry_after_s\n"
        "h = Headers(); h.add('Retry-After', '3'); h.add('Content-Type', 'application/json')\n"
        "print(retry_after_s(plain_headers(h)),\n"
        "      retry_after_s(plain_headers(CaseInsensitiveDict({'Retry-After': '2'}))),\n"
        "      retry_after_s(plain_headers(Headers())))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["3.0", "2.0", "None"]


def test_registrants_of_a_verified_wave_sign_in_at_the_origin_first(
    stack: Stack, tmp_path: Path
) -> None:
    """The Prakerja scenario's verified joins in a rehearsal: each Locust registrant signs in
    at the origin, joins with the enqueue token it was given, and registers."""
    laptop = (REPO / "simulator" / "scenarios" / "laptop.toml").read_text()
    scenario = tmp_path / "verified.toml"
    scenario.write_text(laptop.replace("[wave]\n", "[wave]\nverified_joins = true\n", 1))
    run = run_locust(
        stack, tmp_path, "lt-verified",
        "-u", "10", "-r", "10", "-t", "10s", "--scenario", str(scenario),
        "--admit-rate", "5", "--poll-cap-s", "1",
        "--check-allow-skip", "bots_rate_limited,admission_rate,origin_within_capacity",
    )  # fmt: skip
    assert run.returncode == 0, run.output[-4000:]
    assert int(run.row("origin sign-in")["Request Count"]) > 0
    assert run.row("origin sign-in")["Failure Count"] == "0"
    join = run.row("/api/v1/waves/[wave]/join")
    assert int(join["Request Count"]) > 0 and join["Failure Count"] == "0"
    counts = run.verdict["counts"]
    assert isinstance(counts, dict) and counts[counters.REGISTRATIONS_COMPLETED] > 0
