"""Benchmarks of the simulator (targets as in loadtests/RESULTS.md):

- `driver`: the live driver (`gelombang simulate --mode queued`) holds >= 10 thousand
  concurrent registrants from one core;
- `model`: the offline model runs a 6-million-registrant wave in under 30 s.

Each runs the real code in a child process pinned to one CPU with taskset; its CPU time and
peak memory come from the kernel when it exits (`wait4`, in the process harness), so nothing
after the last sample is missed. `python -m loadtests.bench.simulation POPULATION` is the
model's child.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from gelombang_harness import ChildProcess
from loadtests.bench import seed
from loadtests.bench.processes import (
    REPO_ROOT,
    gelombang,
    http_server,
    pinned,
    queue_server,
    redis_server,
)
from loadtests.bench.report import Row
from queue_service.store import Store
from queue_service.waves import parse_wave
from simulator.scenario import load_scenario
from simulator.wave_definition import wave_definition

DRIVER_TARGET = 10_000
MODEL_TARGET_S = 30.0
MODEL_SCENARIO = "prakerja"
MODEL_TIMEOUT_S = 600.0

DRIVER_WAVE = "bench-driver"
# 12,000 registrants arrive in 40 s: joins stay a small part of the driver's work, and the
# crowd is complete well within a minute.
ARRIVALS_PER_S = 300.0
# After the last arrival everyone keeps waiting (polling) for half the arrival window more, at
# least a few seconds: the peak is held, not just touched.
HOLD_SHARE = 0.5
MIN_HOLD_S = 3.0
# The scenario has more people than --max-registrants (six standard deviations of the Poisson
# count), so the cap, not the luck of the draw, decides how many arrive.
POPULATION_MARGIN_SD = 6.0
# The wave opens this long after the run ends (plus the start-up before the run), so every
# registrant is still in the pre-queue when it stops: nobody leaves by being admitted, and the
# queue tells people to poll every 30 s (its longest interval, while the opening is more than
# 2 minutes away) instead of every 2 s as the opening nears. Not much longer: the pre-queue
# shows the time to opening as the ETA, and a few people balk at a long one.
OPENS_AFTER_RUN_S = 150.0
ABANDON_AFTER_S = 300.0  # as in the Prakerja-like scenario: polls every 30 s at most
DRIVER_SLACK_S = 90.0  # the driver's start-up and wind-down beyond --max-seconds

_MIB = 1024 * 1024


# ----------------------------------------------------------------------------- child processes


@dataclass(frozen=True)
class ChildUsage:
    returncode: int
    wall_s: float
    cpu_s: float
    """User + system CPU of the child over its whole life."""
    peak_rss_mb: float


def cpu_set(spec: str) -> set[int]:
    """A taskset CPU list ("1", "0,2", "2-3") as the set `os.sched_setaffinity` takes."""
    cpus: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def run_pinned(
    command: Sequence[str],
    *,
    cpus: str,
    stdout: Path,
    stderr: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> ChildUsage:
    """Run `command` on `cpus` to the end; stopped (and an error raised) after `timeout_s`."""
    started = time.monotonic()
    child = ChildProcess(
        Path(command[0]).name,
        pinned(command, cpus),
        log=stderr,
        stdout=stdout,
        env=env,
        cwd=REPO_ROOT,
    )
    returncode = child.run(timeout_s)
    assert child.usage is not None  # reaped by run()
    return ChildUsage(
        returncode=returncode,
        wall_s=time.monotonic() - started,
        cpu_s=child.usage.ru_utime + child.usage.ru_stime,
        peak_rss_mb=child.usage.ru_maxrss * 1024 / _MIB,  # ru_maxrss is in KiB on Linux
    )


def _checked(usage: ChildUsage, what: str, log: Path) -> ChildUsage:
    if usage.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{what} exited with {usage.returncode}; see {log}:\n{tail}")
    return usage


# ----------------------------------------------------------------------------- driver


@contextmanager
def origin_server(work_dir: Path, cpus: str) -> Iterator[str]:
    """`gelombang origin`, unprotected: nobody is admitted during the driver benchmark, so the
    origin only answers the driver's /metrics samples. Yields its base URL."""

    def command(port: int) -> list[str]:
        return gelombang("origin", "--host", "127.0.0.1", "--port", str(port), "--unprotected")

    with http_server(work_dir, "origin", command, ready_path="/healthz", cpus=cpus) as server:
        yield server.url


@dataclass(frozen=True)
class DriverPlan:
    registrants: int
    arrivals_s: float
    """The crowd arrives at an even rate over this many seconds from the start of the run."""
    run_s: float
    """--max-seconds: arrivals, then everyone keeps waiting until the driver stops."""

    @classmethod
    def for_registrants(cls, registrants: int) -> DriverPlan:
        arrivals_s = max(1.0, registrants / ARRIVALS_PER_S)
        return cls(registrants, arrivals_s, arrivals_s + max(MIN_HOLD_S, HOLD_SHARE * arrivals_s))


def write_driver_scenario(path: Path, plan: DriverPlan) -> Path:
    """A scenario whose arrivals all fall in the pre-queue window, at an even rate. Population
    traits and behaviour are the defaults, the Prakerja-like mix (3% bots polling every
    0.2-1 s, 1% joki accounts, 30% manual refreshers, 15% with 2-3 tabs). The driver runs
    without an admin token: the scenario's clock only shapes arrivals; the wave itself is
    created by `create_prequeue_wave`."""
    population = math.ceil(plan.registrants + POPULATION_MARGIN_SD * math.sqrt(plan.registrants))
    path.write_text(
        f"""\
name = "bench-driver"
description = "{plan.registrants} registrants in {plan.arrivals_s:.0f} s, all in the pre-queue"
seed = 11

[population]
size = {population}

[clock]
opens_at_s = {plan.arrivals_s}  # arrivals end here (p_pre = 1)
closes_at_s = {plan.run_s + 1}
duration_s = {plan.run_s}

[wave]
id = "{DRIVER_WAVE}"
admit_rate = 1.0
abandon_after_s = {ABANDON_AFTER_S}

[arrivals]
p_pre = 1.0
p_spike = 0.0
p_tail = 0.0
p_last = 0.0
tau_pre_s = 1e6  # flat: an even rate over the window
pre_window_s = {plan.arrivals_s}
diurnal = []
"""
    )
    return path


async def _put_wave(redis_url: str, fields: dict[str, object]) -> None:
    redis = Redis.from_url(redis_url)
    try:
        store = Store(redis, clock=None, timeout_s=30)
        await store.put_wave(parse_wave(DRIVER_WAVE, fields))
    finally:
        await redis.aclose()


def create_prequeue_wave(redis_url: str, origin_url: str, plan: DriverPlan, scenario: Path) -> None:
    """The scenario's wave (`simulator.wave_definition`), written into Redis before the queue
    starts (as `seed` does): its pre-queue is open now and it opens only after the run has
    ended."""
    now = time.time()
    opens_at = now + plan.run_s + OPENS_AFTER_RUN_S
    definition = wave_definition(
        load_scenario(scenario),
        opens_at=opens_at,
        closes_at=opens_at + 3600,
        origin_url=origin_url + "/",
        prequeue_s=opens_at - now + 60,
    )
    asyncio.run(_put_wave(redis_url, definition))


def read_summary(text: str) -> dict[str, str]:
    """`gelombang simulate`'s summary table: a label, then each mode's value right-aligned
    (at least two spaces apart; labels and values have single spaces only); counts carry
    thousands separators."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2:
            rows[parts[0]] = parts[1]
    return rows


def _count(summary: dict[str, str], label: str) -> int:
    try:
        return int(summary[label].replace(",", ""))
    except (KeyError, ValueError):
        raise RuntimeError(f"no {label!r} in the simulator's summary: {summary}") from None


def _simulate_command(
    scenario: Path, origin_url: str, queue_url: str, plan: DriverPlan
) -> list[str]:
    return [
        *gelombang("simulate"),
        "--scenario",
        str(scenario),
        "--mode",
        "queued",
        "--origin-url",
        origin_url,
        "--queue-url",
        queue_url,
        "--max-registrants",
        str(plan.registrants),
        "--max-seconds",
        str(plan.run_s),
        "--no-completions-ok",  # everyone waits in the pre-queue by design
    ]


def _driver_row(plan: DriverPlan, summary: dict[str, str], usage: ChildUsage, log: Path) -> Row:
    peak = _count(summary, "peak live registrants")
    arrived = _count(summary, "arrived")
    requests = _count(summary, "requests sent")
    gave_up_errors = _count(summary, "gave up: errors")
    rate_limited = _count(summary, "429 rate limited")
    # The driver logs a traceback when a registrant's task fails on a bug.
    exceptions = log.read_text(errors="replace").count("Traceback")
    return Row(
        "driver: peak concurrent registrants",
        "registrants",
        [float(peak)],
        target=f">= {DRIVER_TARGET:,}",
        met=peak >= DRIVER_TARGET,
        extra={
            "arrived": arrived,
            "cpu_s": usage.cpu_s,
            "wall_s": usage.wall_s,
            "peak_rss_mb": usage.peak_rss_mb,
            "requests": requests,
            "gave_up_errors": gave_up_errors,
            "rate_limited": rate_limited,
            "exceptions": exceptions,
        },
        note=(
            f"{arrived:,} arrived in {plan.arrivals_s:.0f} s and waited in the pre-queue, run "
            f"{plan.run_s:.0f} s; {requests / plan.run_s:,.0f} requests/s; driver on one CPU: "
            f"{usage.cpu_s:.1f} s CPU over {usage.wall_s:.1f} s wall, peak RSS "
            f"{usage.peak_rss_mb:.0f} MB; errors: {gave_up_errors} gave up on errors, "
            f"{rate_limited} x 429, {exceptions} tracebacks"
        ),
    )


def driver_benchmark(work: Path, registrants: int, server_cpu: str, client_cpu: str) -> list[Row]:
    """(h) One queued run of the live driver, pinned to `client_cpu`; Redis, the queue and the
    origin share `server_cpu`. Everything stops by itself: --max-registrants and
    --max-seconds bound the driver, and it is killed if it overruns."""
    plan = DriverPlan.for_registrants(registrants)
    scenario = write_driver_scenario(work / "driver-scenario.toml", plan)
    stdout, stderr = work / "driver-summary.txt", work / "driver.log"
    # Without an admin token the driver uses the wave as created here and does not reopen it.
    env = {k: v for k, v in os.environ.items() if k != "GELOMBANG_ADMIN_TOKEN"}
    with (
        redis_server(work, cpu_set(server_cpu)) as rs,
        origin_server(work, server_cpu) as origin_url,
    ):
        create_prequeue_wave(rs.url, origin_url, plan, scenario)
        config = seed.write_config(work / "bench.toml")
        with queue_server(work, rs.url, config, cpus=server_cpu) as queue:
            usage = run_pinned(
                _simulate_command(scenario, origin_url, queue.url, plan),
                cpus=client_cpu,
                stdout=stdout,
                stderr=stderr,
                timeout_s=plan.run_s + DRIVER_SLACK_S,
                env=env,
            )
    _checked(usage, "gelombang simulate", stderr)
    return [_driver_row(plan, read_summary(stdout.read_text()), usage, stderr)]


# ----------------------------------------------------------------------------- offline model


@dataclass(frozen=True)
class ModelRun:
    wall_s: float
    """The model run itself (scenario loaded, wave simulated), without interpreter start-up."""
    cpu_s: float
    arrived: int
    admitted: int
    process: ChildUsage


def _model_run(work: Path, population: int, cpus: str, n: int) -> ModelRun:
    stdout, stderr = work / f"model-{n}.json", work / f"model-{n}.log"
    command = [sys.executable, "-m", "loadtests.bench.simulation", str(population)]
    usage = run_pinned(command, cpus=cpus, stdout=stdout, stderr=stderr, timeout_s=MODEL_TIMEOUT_S)
    _checked(usage, "the model", stderr)
    result = json.loads(stdout.read_text().splitlines()[-1])
    return ModelRun(result["wall_s"], result["cpu_s"], result["arrived"], result["admitted"], usage)


def model_benchmark(work: Path, population: int, runs: int, cpus: str) -> list[Row]:
    """(i) `run_model` on the Prakerja-like scenario at `population`, `runs` times, each in a
    fresh process pinned to `cpus`; the median wall time is judged."""
    results = [_model_run(work, population, cpus, n) for n in range(runs)]
    walls = [r.wall_s for r in results]
    last = results[-1]
    return [
        Row(
            f"offline model, {MODEL_SCENARIO}, {population:,} registrants",
            "s",
            walls,
            target=f"< {MODEL_TARGET_S:g} s",
            met=statistics.median(walls) < MODEL_TARGET_S,
            extra={
                "cpu_s": statistics.median(r.cpu_s for r in results),
                "peak_rss_mb": max(r.process.peak_rss_mb for r in results),
                "arrived": last.arrived,
                "admitted": last.admitted,
            },
            note=(
                f"{last.arrived:,} arrivals, {last.admitted:,} admitted; one CPU: "
                f"{statistics.median(r.cpu_s for r in results):.1f} s CPU, peak RSS "
                f"{max(r.process.peak_rss_mb for r in results):.0f} MB; with interpreter "
                f"start-up {statistics.median(r.process.wall_s for r in results):.1f} s wall"
            ),
        )
    ]


def _model_child(population: int) -> None:
    """Run the model once and print its timings and totals as one JSON line."""
    from simulator.model import run_model
    from simulator.scenario import load_scenario

    wall_0, cpu_0 = time.perf_counter(), time.process_time()
    record = run_model(load_scenario(MODEL_SCENARIO), population=population)
    wall_s, cpu_s = time.perf_counter() - wall_0, time.process_time() - cpu_0
    totals = record.totals
    result = {
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "arrived": totals.arrived,
        "admitted": totals.admitted,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    _model_child(int(sys.argv[1]))
