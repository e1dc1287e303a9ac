"""The autopilot against a real origin that changes under load (issue 23 item 5): the same wave
run twice on real processes, once with the autopilot on and once at the operator's fixed
setting, while the origin loses half its capacity mid-run.

    python -m loadtests.bench autopilot [--runs 3]

Each run starts its own private redis-server, `gelombang serve`, the sample origin (requiring
the queue's admission tokens) and a real Prometheus scraping the origin every second; the live
driver (`simulator.driver`) sends the crowd of `autopilot.toml` through the queue. The wave is
configured far above what the origin takes (`admit_rate` 60/s, `max_active` 150, as an
operator would guess); `halve_at_s` after the driver starts, the origin's admin API halves its
worker pool. Everything is on 127.0.0.1 and stops by itself.

What a run measures comes from the origin's own /metrics, read every half second: its answers
and 5xx (overload 503 and timeout 504 included), completed registrations, its capacity; and
from the queue's admin view and the autopilot's decision log: the target over time.

What the autopilot's goodput is judged against, per phase (issue 23: "the best fixed setting
for each phase, found by sweeping fixed settings in the model"): `model_baseline` runs the
same scenario in the offline model (the origin halving at the same time, its gateway timing
out as the live one does) at sixteen fixed settings and keeps, per phase, the best goodput of
those that kept the origin within the error target: an oracle that knew the phase's capacity
in advance. Beside it, the ceiling: the origin's capacity divided by the mean service time of
one registration at no load (`simulator.sessions.flow_service_s`); no setting gets more
registrations through its workers than that (any backlog makes the sample origin's workers
slower still).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import os
import secrets
import statistics
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from loadtests.bench.processes import Server, gelombang, http_server
from loadtests.bench.report import Row
from queue_service.redis_server import EmbeddedRedis
from simulator.autopilot_sweep import capacity_phases, fixed_sweep
from simulator.autopilot_trace import (
    Decision,
    OriginWatch,
    PrometheusServer,
    Sample,
    autopilot_settings,
    error_ratio,
    read_decisions,
    sample_at,
)
from simulator.model.capacity_origin import GATEWAY_SHARE_OF_TIMEOUT
from simulator.scenario import Scenario, scenario_from_dict
from simulator.sessions import flow_service_s

SCENARIO = Path(__file__).with_name("autopilot.toml")
QUEUE_TIMEOUT_S = 2.0
SETTLE_INTERVALS = 4
"""The autopilot is converged this many intervals after the halving: the origin's backlog
shows as 504s after its 2 s timeout, in a signal over a 3 s window, read at the next
interval (one to two intervals); the cut (x0.5 on errors) stops admissions until the admitted
sessions drain (~2 s), and the window forgets the errors (one more interval); a second cut
may follow one interval later. Measured: 0.1-8.2 s until no interval is over 2%."""
"""The origin's gateway drops a request that waited this long for a worker (504)."""
Mode = Literal["on", "off"]


@dataclass(frozen=True)
class Setup:
    """The run's knobs: where the origin halves, and the autopilot's settings (short interval
    and query windows, so that a one-minute run holds a few dozen decisions)."""

    halve_at_s: float = 32.0
    """Driver time when the origin loses half its workers (the wave opens at 2 s)."""
    interval_s: float = 3.0
    window_s: int = 3
    """The PromQL rate window: a few scrapes, so a signal reflects the last two intervals."""
    latency_target_s: float = 1.2
    error_target: float = 0.02
    min_active: int = 4
    scenario: Path = SCENARIO
    duration_s: float | None = None
    """The run's length (the wave closes then); None: the scenario's (64 s)."""
    population: int | None = None
    """Registrants; None: the scenario's (1,200)."""

    def scenario_data(self) -> dict[str, Any]:
        """The scenario's tables, with this setup's length and crowd."""
        data = tomllib.loads(self.scenario.read_text("utf-8"))
        if self.duration_s is not None:
            data["clock"]["closes_at_s"] = data["clock"]["duration_s"] = self.duration_s
        if self.population is not None:
            data["population"]["size"] = self.population
        return data

    def load(self) -> Scenario:
        return scenario_from_dict(self.scenario_data(), str(self.scenario))

    def autopilot(self, prometheus_url: str, max_active: int) -> dict[str, Any]:
        return autopilot_settings(
            prometheus_url,
            max_active=max_active,
            min_active=self.min_active,
            interval_s=self.interval_s,
            window_s=self.window_s,
            latency_target_s=self.latency_target_s,
            error_target=self.error_target,
        )


LONG = Setup(halve_at_s=92.0, duration_s=152.0, population=3000)
"""The benchmark's setup: phases of 90 s and 60 s, long enough for goodput to say what the law
does after the opening (in the e2e test's 30-second phases the convergence itself is most of
the full phase). The crowd grows with the run, so the line never runs dry."""


def model_scenario(setup: Setup = Setup()) -> Scenario:
    """The live run as the offline model sees it: the bench scenario with the origin halving at
    `halve_at_s` and its gateway's timeout (the model's gateway gives up at
    `GATEWAY_SHARE_OF_TIMEOUT` of `timeout_s`), the autopilot as the run sets it."""
    data = setup.scenario_data()
    capacity = int(data["origin"]["capacity"])
    data["origin"]["capacity_schedule"] = [[setup.halve_at_s, max(1, capacity // 2)]]
    data["origin"]["timeout_s"] = QUEUE_TIMEOUT_S / GATEWAY_SHARE_OF_TIMEOUT
    data["wave"]["autopilot"] = setup.autopilot("http://127.0.0.1:9", data["wave"]["max_active"])
    return scenario_from_dict(data, str(setup.scenario))


@functools.cache
def model_baseline(setup: Setup = Setup()) -> tuple[float, float]:
    """The best fixed setting's goodput (registrations/s) in the full and the halved phase,
    from sweeping fixed settings in the model (`simulator.autopilot_sweep`): per phase the
    best of those that kept the origin's errors within the autopilot's target. The model is
    deterministic, so it is swept once per setup, not once per live run."""
    scenario = model_scenario(setup)
    sweep = fixed_sweep(scenario)
    full, halved = (
        sweep.best(i, error_limit=setup.error_target).phases[i].goodput
        for i in range(len(capacity_phases(scenario)))
    )
    return full, halved


@dataclass
class Run:
    mode: Mode
    setup: Setup
    opens_at_s: float
    capacities: tuple[int, int]
    service_s: float
    """Mean origin service time of one registration at no load."""
    best_fixed_per_s: tuple[float, float] = (math.nan, math.nan)
    """The model's best fixed setting per phase (`model_baseline`)."""
    duration_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


@dataclass(frozen=True)
class Phase:
    """One capacity phase of a run, from `settled_at_s` (its start plus the settling allowance)
    to its end."""

    name: str
    start_s: float
    end_s: float
    capacity: int
    sustainable_per_s: float
    """The ceiling: capacity / mean service time of a registration at no load."""
    best_fixed_per_s: float
    """The model's best fixed setting's goodput in this phase (`model_baseline`)."""
    settled_at_s: float
    answers: float
    errors: float
    completed: float
    peak_error_ratio: float
    """Worst origin 5xx share over any one interval from `settled_at_s` on."""
    converged_after_s: float | None
    """From the phase's start until every later interval's 5xx share stays under the target
    (None: it never did)."""

    @property
    def error_ratio(self) -> float:
        return self.errors / self.answers if self.answers else 0.0

    @property
    def goodput_per_s(self) -> float:
        return self.completed / max(self.end_s - self.settled_at_s, 1e-9)

    @property
    def goodput_share(self) -> float:
        """Of the ceiling (what the origin's workers could complete at all)."""
        return self.goodput_per_s / self.sustainable_per_s

    @property
    def share_of_best_fixed(self) -> float:
        """Of the model's best fixed setting for the phase (issue 23's measure)."""
        return self.goodput_per_s / self.best_fixed_per_s


@dataclass
class Stack:
    redis: EmbeddedRedis
    queue: Server
    origin: Server
    prometheus: PrometheusServer
    admin_token: str
    origin_token: str


@contextlib.contextmanager
def stack(work: Path, scenario: Scenario) -> Iterator[Stack]:
    """Redis, the queue, the protected sample origin and Prometheus, all stopped on leaving."""
    admin_token, origin_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "GELOMBANG_ADMIN_TOKEN": admin_token,
        "GELOMBANG_ORIGIN_ADMIN_TOKEN": origin_token,
        # one machine's crowd on loopback: no per-IP limit, and a loaded CPU must not shed
        "GELOMBANG_RATE_LIMITS": "off",
        "GELOMBANG_MAX_LAG_S": "30",
        "GELOMBANG_MAX_CONNECTIONS": "10000",
        "GELOMBANG_MAX_INFLIGHT": "10000",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    redis = EmbeddedRedis(work / "redis", appendonly=False).start()
    origin = scenario.origin
    try:
        with contextlib.ExitStack() as stop:

            def queue_command(port: int) -> list[str]:
                return gelombang(
                    "serve", "--host", "127.0.0.1", "--port", str(port), "--redis-url", redis.url,
                    "--state-dir", str(work / "state"), "--log-format", "text",
                )  # fmt: skip

            queue = stop.enter_context(
                http_server(work, "serve", queue_command, ready_path="/readyz", env=env)
            )

            def origin_command(port: int) -> list[str]:
                command = gelombang(
                    "origin", "--host", "127.0.0.1", "--port", str(port),
                    "--capacity", str(origin.capacity), "--backlog", str(2 * origin.capacity),
                    "--queue-timeout", str(QUEUE_TIMEOUT_S), "--seed", "1",
                    "--wave", scenario.wave.id, "--jwks-url", f"{queue.url}/.well-known/jwks.json",
                )  # fmt: skip
                for step, ms in origin.service_ms.items():
                    command += ["--service-ms", f"{step}={ms}"]
                return command

            origin_server = stop.enter_context(
                http_server(work, "origin", origin_command, ready_path="/healthz", env=env)
            )
            prometheus = stop.enter_context(
                PrometheusServer(work / "prometheus", origin_server.url.removeprefix("http://"))
            )
            yield Stack(redis, queue, origin_server, prometheus, admin_token, origin_token)
    finally:
        redis.stop()


@contextlib.asynccontextmanager
async def _background(*coroutines: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result


def run_once(mode: Mode, work: Path, setup: Setup = Setup(), *, progress: bool = False) -> Run:
    """One run of the scenario, with the autopilot `on` or `off` (the operator's setting)."""
    import uvloop

    from simulator.driver import DriverConfig, run_live

    scenario = setup.load()
    capacity = scenario.origin.capacity
    run = Run(
        mode=mode,
        setup=setup,
        opens_at_s=scenario.clock.opens_at_s,
        capacities=(capacity, max(1, capacity // 2)),
        service_s=flow_service_s(scenario.origin),
        best_fixed_per_s=model_baseline(setup),
    )
    work.mkdir(parents=True, exist_ok=True)
    with stack(work, scenario) as processes:
        changes: dict[str, Any] = {}
        if mode == "on":
            changes["autopilot"] = setup.autopilot(
                processes.prometheus.url, scenario.wave.max_active
            )
        config = DriverConfig(
            mode="queued",
            origin_url=processes.origin.url,
            queue_url=processes.queue.url,
            admin_token=processes.admin_token,
            max_registrants=scenario.population_size * 2,
            max_seconds=scenario.clock.duration_s,
            progress=sys.stderr if progress else None,
            wave_changes=changes,
        )

        async def drive() -> float:
            started = time.monotonic()
            started_wall = time.time()

            def clock() -> float:
                return time.monotonic() - started

            async with aiohttp.ClientSession() as http:
                watch = OriginWatch(
                    http, processes.origin.url, processes.queue.url, scenario.wave.id,
                    processes.admin_token, clock, run.samples,
                )  # fmt: skip
                halve = watch.set_capacity_at(
                    setup.halve_at_s, run.capacities[1], processes.origin_token
                )
                async with _background(watch.watch(), halve):
                    await run_live(scenario, config)
            run.duration_s = clock()
            return started_wall

        started_wall = uvloop.run(drive())
        if mode == "on":
            run.decisions = asyncio.run(
                read_decisions(processes.redis.url, scenario.wave.id, started_wall)
            )
    return run


# -- what a run shows ---------------------------------------------------------------------


def phases(run: Run, settle_s: tuple[float, float]) -> list[Phase]:
    """The full-capacity phase (from the opening) and the halved one (from the halving), each
    measured from `settle_s` after its start to its end."""
    halve = run.setup.halve_at_s
    full_best, halved_best = run.best_fixed_per_s
    bounds = [
        ("full", run.opens_at_s, halve, run.capacities[0], settle_s[0], full_best),
        ("halved", halve, run.duration_s, run.capacities[1], settle_s[1], halved_best),
    ]
    interval = run.setup.interval_s
    result = []
    for name, start, end, capacity, settle, best_fixed in bounds:
        first, last = sample_at(run.samples, start + settle), sample_at(run.samples, end)
        within = [s for s in run.samples if start <= s.t <= end]
        windows = [
            (a.t, error_ratio(a, sample_at(within, a.t + interval)))
            for a in within
            if a.t + interval <= end
        ]
        converged = None
        for index, (t, _) in enumerate(windows):
            if all(r < run.setup.error_target for _, r in windows[index:]):
                converged = t - start
                break
        result.append(
            Phase(
                name=name,
                start_s=start,
                end_s=end,
                capacity=capacity,
                sustainable_per_s=capacity / run.service_s,
                best_fixed_per_s=best_fixed,
                settled_at_s=start + settle,
                answers=last.answers - first.answers,
                errors=last.errors - first.errors,
                completed=last.completed - first.completed,
                peak_error_ratio=max((r for t, r in windows if t >= start + settle), default=0.0),
                converged_after_s=converged,
            )
        )
    return result


def settled_target(run: Run, start_s: float, end_s: float) -> int | None:
    """The median target of the phase's second half (the autopilot's steady state)."""
    middle = (start_s + end_s) / 2
    targets = [d.target for d in run.decisions if middle <= d.t <= end_s]
    return int(statistics.median(targets)) if targets else None


def timeline(run: Run, every_s: float = 2.0) -> str:
    """A line per `every_s`: the setting, the origin's errors, goodput and latency."""
    lines = ["    t  cap  max_active  answers/s  5xx%  registered/s  p95 s"]
    marks = [s for s in run.samples if s.t >= 0]
    points = [sample_at(marks, t) for t in itertools.takewhile(
        lambda t: t <= run.duration_s, itertools.count(0.0, every_s))]  # fmt: skip
    for a, b in itertools.pairwise(points):
        span = max(b.t - a.t, 1e-9)
        latency = "" if b.latency_s is None else f"{b.latency_s:.2f}"
        lines.append(
            f"{b.t:5.1f} {b.capacity:4d} {b.max_active or 0:11d} "
            f"{(b.answers - a.answers) / span:10.1f} {error_ratio(a, b):5.1%} "
            f"{(b.completed - a.completed) / span:13.1f}  {latency}"
        )
    return "\n".join(lines)


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


@dataclass(frozen=True)
class Comparison:
    """One iteration of the benchmark: the autopilot's run and the fixed setting's."""

    on: Run
    off: Run

    def converged_after_s(self) -> tuple[float, float]:
        """Seconds from the opening, and from the halving, until every later interval's
        origin 5xx share stays under the target (nan: never within the phase)."""
        full, halved = phases(self.on, (0.0, 0.0))
        return tuple(  # type: ignore[return-value]
            math.nan if p.converged_after_s is None else p.converged_after_s for p in (full, halved)
        )

    def settle_s(self) -> tuple[float, float]:
        """Where each phase's goodput is measured from: the full phase from the autopilot's
        convergence, the halved one from `SETTLE_INTERVALS` after the halving (as the e2e
        test)."""
        full_converged, _ = self.converged_after_s()
        if math.isnan(full_converged):
            full_converged = self.on.setup.halve_at_s - self.on.opens_at_s
        return full_converged, SETTLE_INTERVALS * self.on.setup.interval_s

    def overshoot(self) -> tuple[float, float]:
        """The halved phase: the highest target after the halving over the settled target,
        and the worst interval's origin 5xx share."""
        run = self.on
        _, halved = phases(run, (0.0, 0.0))
        settled = settled_target(run, halved.start_s, halved.end_s)
        after = [d.target for d in run.decisions if halved.start_s <= d.t <= halved.end_s]
        ratio = max(after) / settled if after and settled else math.nan
        return ratio, halved.peak_error_ratio

    def goodput(self) -> dict[str, tuple[float, float, float, float]]:
        """Registrations completed per second in each phase (from `settle_s`): the
        autopilot's, the fixed setting's, the model's best fixed setting's, and the ceiling."""
        settle = self.settle_s()
        on, off = phases(self.on, settle), phases(self.off, settle)
        return {
            p.name: (p.goodput_per_s, q.goodput_per_s, p.best_fixed_per_s, p.sustainable_per_s)
            for p, q in zip(on, off, strict=True)
        }


def compare(work: Path, setup: Setup = Setup()) -> Comparison:
    return Comparison(
        on=run_once("on", work / "on", setup), off=run_once("off", work / "off", setup)
    )


def bench_rows(runs: int, work: Path, setup: Setup = LONG) -> list[Row]:
    """`python -m loadtests.bench autopilot`: the median of `runs` comparisons."""
    results = [compare(work / f"run-{n}", setup) for n in range(runs)]
    for n, result in enumerate(results):
        print(f"run {n}: autopilot on\n{timeline(result.on)}", file=sys.stderr)
        print(f"run {n}: autopilot off (fixed)\n{timeline(result.off)}", file=sys.stderr)
    settle = SETTLE_INTERVALS * setup.interval_s
    converged = [r.converged_after_s() for r in results]
    overshoot = [r.overshoot() for r in results]
    goodput = [r.goodput() for r in results]
    peak_on_full = [phases(r.on, (0.0, 0.0))[0].peak_error_ratio for r in results]
    errors_after = [100 * phases(r.on, r.settle_s())[1].error_ratio for r in results]
    errors_fixed = [100 * phases(r.off, r.settle_s())[1].error_ratio for r in results]
    rows = [
        Row("autopilot: converged after the opening", "s", [c[0] for c in converged],
            target="measured", note="from the opening until every later interval's origin "
            "5xx share is under 2% (the opening burst of 150 sessions lands before any "
            f"signal); interval {setup.interval_s:g} s"),
        Row("autopilot: converged after the halving", "s", [c[1] for c in converged],
            target=f"<= {settle:g} s", met=all(c[1] <= settle for c in converged)),
        Row(f"autopilot: origin 5xx from {SETTLE_INTERVALS} intervals after the halving", "%",
            errors_after, target="< 2", met=all(e < 2 for e in errors_after)),
        Row("fixed setting: origin 5xx, same window", "%", errors_fixed, target="measured"),
        Row("autopilot: origin 5xx peak, one interval, full phase", "%",
            [100 * p for p in peak_on_full], target="measured", note="the opening burst"),
        Row("autopilot: origin 5xx peak, one interval, halved phase", "%",
            [100 * o[1] for o in overshoot], target="measured"),
        Row("autopilot: overshoot after the halving (peak / settled target)", "x",
            [o[0] for o in overshoot], target="measured"),
    ]  # fmt: skip
    whole = [[p.goodput_per_s for p in phases(r.on, (0.0, 0.0))] for r in results]
    for index, phase in enumerate(("full", "halved")):
        _, _, best_fixed, sustainable = goodput[0][phase]
        window = "from convergence" if phase == "full" else f"from {settle:g} s after the halving"
        met = statistics.median(g[phase][0] for g in goodput) >= 0.8 * best_fixed
        rows += [
            Row(f"goodput, {phase} phase ({window}): autopilot", "registrations/s",
                [g[phase][0] for g in goodput], target=f">= 80% of {best_fixed:.1f}", met=met,
                note=f"{best_fixed:.1f}/s: the best fixed setting of the phase in the model "
                f"(model_baseline); the ceiling, capacity / mean service time of a "
                f"registration at no load, is {sustainable:.1f}/s"),
            Row(f"goodput, {phase} phase ({window}): share of the best fixed setting", "%",
                [100 * g[phase][0] / best_fixed for g in goodput], target=">= 80", met=met),
            Row(f"goodput, {phase} phase (all of it): share of the best fixed setting", "%",
                [100 * w[index] / best_fixed for w in whole], target="measured",
                note="the opening's overload counted" if phase == "full" else ""),
            Row(f"goodput, {phase} phase ({window}): fixed setting", "registrations/s",
                [g[phase][1] for g in goodput], target="measured"),
        ]  # fmt: skip
    return rows


if __name__ == "__main__":  # a quick look: python -m loadtests.bench.autopilot on|off
    import tempfile

    chosen: Mode = "off" if sys.argv[1:2] == ["off"] else "on"
    with tempfile.TemporaryDirectory(prefix="gelombang-autopilot-") as folder:
        measured = run_once(chosen, Path(folder), progress=True)
        print(timeline(measured))
        for decision in measured.decisions:
            print(
                f"{decision.t:6.1f} {decision.action:9s} {decision.target:4d} "
                f"active {decision.active:4d} S {decision.session_s:5.2f} rate "
                f"{decision.rate:6.2f} {decision.reason}"
            )
        for phase in phases(measured, (10.0, 8.0)):
            print(
                phase,
                f"goodput {phase.goodput_per_s:.1f}/s = {phase.share_of_best_fixed:.0%} of the "
                f"best fixed setting, {phase.goodput_share:.0%} of the ceiling",
            )
