"""A simulated wave opening, twice: straight at the origin, then through Gelombang.

    gelombang demo [--scenario laptop] [--out reports/demo-<timestamp>]

Starts a private redis-server, the queue service and two sample origins on loopback ports
(one unprotected, one that requires admission tokens), drives the scenario's crowd at the
unprotected origin, then through the queue at the protected one, prints both side by side and
writes the run records and the report. Through the queue some people opt in to be called back
(the scenario's `[callbacks]`, else `simulator.demo_callbacks`), messaged by the driver's own
gateway with the webhook secret the stack generated. Everything it started is stopped when it
ends, on errors and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import aiohttp

from gelombang_harness import ChildProcess, HttpReady, stop_all
from queue_service.redis_server import free_port
from simulator.autopilot_trace import AutopilotTrace, Sample
from simulator.scenario import Scenario
from simulator.wave_definition import as_toml, wave_definition

READY_TIMEOUT_S = 30.0
AUTOPILOT_INTERVAL_S = 3.0
AUTOPILOT_LATENCY_TARGET_S = 1.2
"""p95 of the origin's answers: ~0.3 s when it is healthy, its 4 s timeout when overloaded."""
# The whole simulated crowd comes from 127.0.0.1: per-IP limits are raised to fit it, while the
# per-registrant and per-ticket limits stay as deployed, so fast-polling bots still meet 429s.
CROWD_RATE_LIMITS = """\
[rate_limits]
join_per_ip = { rate_per_s = 100000.0, burst = 100000 }
status_per_ip = { rate_per_s = 100000.0, burst = 100000 }
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="laptop", help="bundled scenario name or a .toml")
    parser.add_argument("--out", type=Path, help="report folder (default reports/demo-<timestamp>)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=90.0,
        help="length of each of the two runs, wall seconds (at most the scenario's duration)",
    )
    parser.add_argument(
        "--max-registrants", type=int, default=5000, help="arrivals per run, at most"
    )
    parser.add_argument("--seed", type=int, help="population and arrival seed (scenario's)")


class LocalStack:
    """Redis, the queue service and two origins (unprotected and protected) on loopback, as
    real processes. A context manager: leaving it stops everything it started."""

    def __init__(
        self, scenario: Scenario, state_dir: Path, log_dir: Path, *, autopilot: bool = False
    ) -> None:
        self.scenario = scenario
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.autopilot = autopilot
        """Also a Prometheus scraping the protected origin, for the wave's autopilot."""
        self.admin_token = secrets.token_urlsafe(24)
        self.origin_admin_token = secrets.token_urlsafe(24)
        """The origins' admin API (their capacity, changed mid-run)."""
        self.webhook_secret = base64.b64encode(secrets.token_bytes(32)).decode()
        """Signs the queue's call-back messages; the driver's gateway checks them with it."""
        self.prometheus_url: str | None = None
        self.queue_port = free_port()
        self.direct_port = free_port()
        self.protected_port = free_port()
        self._redis: Any = None
        self._processes: list[ChildProcess] = []

    @property
    def queue_url(self) -> str:
        return f"http://127.0.0.1:{self.queue_port}"

    @property
    def redis_url(self) -> str:
        return str(self._redis.url)

    @property
    def direct_origin_url(self) -> str:
        return f"http://127.0.0.1:{self.direct_port}"

    @property
    def protected_origin_url(self) -> str:
        return f"http://127.0.0.1:{self.protected_port}"

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        from queue_service.redis_server import EmbeddedRedis

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._redis = EmbeddedRedis(self.state_dir / "redis", appendonly=False).start()
        config = self.log_dir / "waves.toml"  # no secret in it: kept with the logs
        config.write_text(self.waves_toml())
        env = {
            **os.environ,
            "GELOMBANG_ADMIN_TOKEN": self.admin_token,
            "GELOMBANG_ORIGIN_ADMIN_TOKEN": self.origin_admin_token,
            "GELOMBANG_WEBHOOK_SECRET": self.webhook_secret,
            "PYTHONUNBUFFERED": "1",
        }
        if self.autopilot:
            from simulator.autopilot_trace import PrometheusServer

            prometheus = PrometheusServer(
                self.state_dir / "prometheus", f"127.0.0.1:{self.protected_port}"
            )
            self._processes.append(prometheus.spawn())
            prometheus.wait_ready()
            self.prometheus_url = prometheus.url
        env.pop("GELOMBANG_RATE_LIMITS", None)  # the crowd limits above apply
        self._spawn(
            "queue",
            [
                "serve",
                "--host", "127.0.0.1",
                "--port", str(self.queue_port),
                "--redis-url", self._redis.url,
                "--config", str(config),
                "--state-dir", str(self.state_dir),
                "--log-format", "text",
                "--log-level", "WARNING",
            ],
            env,
        )  # fmt: skip
        origin_args = ["origin", "--host", "127.0.0.1", *self.origin_flags()]
        self._spawn(
            "origin-direct",
            [*origin_args, "--port", str(self.direct_port), "--unprotected"],
            env,
        )
        self._wait_ready(self.queue_url + "/readyz", "queue")
        self._spawn(
            "origin-protected",
            [
                *origin_args,
                "--port", str(self.protected_port),
                "--wave", self.scenario.wave.id,
                "--jwks-url", self.queue_url + "/.well-known/jwks.json",
            ],
            env,
        )  # fmt: skip
        self._wait_ready(self.direct_origin_url + "/healthz", "origin-direct")
        self._wait_ready(self.protected_origin_url + "/healthz", "origin-protected")

    def origin_flags(self) -> list[str]:
        """The scenario's [origin] table as `gelombang origin` flags."""
        origin = self.scenario.origin
        flags = [
            "--capacity", str(origin.capacity),
            "--backlog", str(4 * origin.capacity),
            # The origin's gateway gives up a little before the client does.
            "--queue-timeout", str(0.8 * origin.timeout_s),
        ]  # fmt: skip
        for step, ms in origin.service_ms.items():
            flags += ["--service-ms", f"{step}={ms}"]
        return flags

    def autopilot_changes(self) -> dict[str, Any]:
        """The wave's `autopilot` (on, with this stack's Prometheus), for the queued run: it
        starts at the scenario's max_active (the operator's setting) and may go from a tenth
        of it to twice it. Short signal windows and interval: a demo run lasts a minute."""
        from simulator.autopilot_trace import autopilot_settings

        if self.prometheus_url is None:
            return {}
        configured = self.scenario.wave.max_active
        return {
            "autopilot": autopilot_settings(
                self.prometheus_url,
                max_active=2 * configured,
                min_active=max(2, configured // 10),
                interval_s=AUTOPILOT_INTERVAL_S,
                window_s=3,
                latency_target_s=AUTOPILOT_LATENCY_TARGET_S,
            )
        }

    def waves_toml(self) -> str:
        """The wave, scheduled an hour ahead; the driver re-opens it relative to its run."""
        now = time.time()
        definition = wave_definition(
            self.scenario,
            opens_at=round(now + 3600),
            closes_at=round(now + 7200),
            origin_url=self.protected_origin_url + "/",
        )
        return CROWD_RATE_LIMITS + "\n" + as_toml(self.scenario.wave.id, definition)

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        # Its own process group: Ctrl-C reaches only us; we stop the children in order.
        process = ChildProcess(
            name,
            [sys.executable, "-m", "gelombang.cli", *args],
            log=self.log_dir / f"{name}.log",
            env=env,
            ready_timeout_s=READY_TIMEOUT_S,
        )
        self._processes.append(process.spawn())

    def _wait_ready(self, url: str, name: str) -> None:
        process = next(p for p in self._processes if p.name == name)
        process.ready = HttpReady(url)
        process.wait_ready()

    def stop(self) -> None:
        stop_all(reversed(self._processes))
        self._processes.clear()
        if self._redis is not None:
            self._redis.stop()
            self._redis = None


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from simulator.autopilot_trace import prometheus_available
    from simulator.commands.simulate import summary_text, write_outputs
    from simulator.demo_callbacks import with_demo_callbacks
    from simulator.scenario import ScenarioError, load_scenario

    try:
        scenario = with_demo_callbacks(load_scenario(args.scenario))
    except ScenarioError as exc:
        print(f"gelombang demo: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out or Path("reports") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` cleans up like Ctrl-C
    run_s = min(args.max_seconds, scenario.clock.duration_s)
    say = _printer()
    say(
        f"Gelombang demo: scenario {scenario.name!r}, up to {args.max_registrants} registrants, "
        f"two runs of {run_s:.0f} s. Output in {out}/"
    )
    autopilot = prometheus_available()
    if not autopilot:
        say("prometheus is not installed: the run through Gelombang keeps its fixed setting")
    try:
        results, trace = _run_both(scenario, args, out, run_s, say, autopilot)
    except KeyboardInterrupt:
        say("interrupted: every process the demo started has been stopped")
        raise
    say("all processes stopped")
    print()
    print(summary_text(results))
    if trace is not None:
        print()
        print("\n".join(trace.lines()))
    print()
    write_outputs(out, results, autopilot=trace)
    say(f"report in {out}/")
    return 0


def _run_both(
    scenario: Scenario,
    args: argparse.Namespace,
    out: Path,
    run_s: float,
    say: Any,
    autopilot: bool,
) -> tuple[dict[str, Any], AutopilotTrace | None]:
    import uvloop

    from simulator.driver import DriverConfig, LiveResult

    results: dict[str, LiveResult] = {}
    trace: AutopilotTrace | None = None
    unprotected: list[Sample] = []
    capacity = scenario.origin.capacity
    drop_at_s = run_s / 2
    # Redis data and the development signing key live in a private temporary folder, not in
    # the report folder people share; the logs stay with the report.
    with (
        tempfile.TemporaryDirectory(prefix="gelombang-demo-") as state,
        LocalStack(scenario, Path(state), out / "logs", autopilot=autopilot) as stack,
    ):
        say(
            f"started redis-server, queue {stack.queue_url}, origins {stack.direct_origin_url} "
            f"(no waiting room) and {stack.protected_origin_url} (behind Gelombang); "
            f"capacity {capacity} concurrent requests, halved {drop_at_s:.0f} s into each run"
            + (f"; Prometheus {stack.prometheus_url} for the autopilot" if autopilot else "")
        )
        plans = [
            ("direct", stack.direct_origin_url, "1/2 without Gelombang: straight at the origin"),
            ("queued", stack.protected_origin_url, "2/2 through Gelombang: the waiting room"
             + (", autopilot on" if autopilot else "") + _callbacks_note(scenario)),
        ]  # fmt: skip
        for mode, origin_url, title in plans:
            say(f"run {title}")
            config = DriverConfig(
                mode=mode,
                origin_url=origin_url,
                queue_url=stack.queue_url,
                max_registrants=args.max_registrants,
                max_seconds=run_s,
                seed=args.seed,
                admin_token=stack.admin_token,
                wave_changes=stack.autopilot_changes() if mode == "queued" else {},
                webhook_secret=stack.webhook_secret,
            )
            watched = AutopilotTrace(
                configured_max_active=scenario.wave.max_active,
                capacity_before=capacity,
                capacity_after=max(1, capacity // 2),
                capacity_drop_at_s=drop_at_s,
            )
            results[mode] = uvloop.run(_drive(stack, scenario, config, watched))
            if mode == "direct":
                unprotected = watched.samples
            elif autopilot:
                trace = watched
                trace.unprotected_samples = unprotected
    return results, trace


def _callbacks_note(scenario: Scenario) -> str:
    """How the run through Gelombang offers call-backs, for its title line."""
    callbacks = scenario.callbacks
    if not callbacks.enabled:
        return ""
    return (
        f", call-backs: {callbacks.optin_share:.0%} of those who stay opt in "
        f"({', '.join(callbacks.offered)}) and come back by their link"
    )


async def _drive(stack: LocalStack, scenario: Scenario, config: Any, trace: AutopilotTrace) -> Any:
    """One run while its origin loses half its capacity halfway through, the origin watched
    (`trace`); with the autopilot, its decisions and final target too."""

    from simulator.autopilot_trace import OriginWatch, read_decisions
    from simulator.driver import run_live
    from simulator.wave_admin import WaveAdmin

    started, started_wall = time.monotonic(), time.time()

    def clock() -> float:
        return time.monotonic() - started

    async with aiohttp.ClientSession() as http:
        watch = OriginWatch(
            http, config.origin_url, stack.queue_url, scenario.wave.id, stack.admin_token,
            clock, trace.samples,
        )  # fmt: skip
        tasks = [
            asyncio.create_task(
                watch.set_capacity_at(
                    trace.capacity_drop_at_s, trace.capacity_after, stack.origin_admin_token
                )
            )
        ]
        tasks.append(asyncio.create_task(watch.watch()))
        try:
            result = await run_live(scenario, config)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if config.wave_changes:
            # the view first: a decision landing in between is then in the log too
            view = await WaveAdmin(http, stack.queue_url, stack.admin_token).view(scenario.wave.id)
            trace.final_target = ((view or {}).get("autopilot") or {}).get("target_active")
            trace.decisions = await read_decisions(stack.redis_url, scenario.wave.id, started_wall)
    return result


def _printer() -> Any:
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[demo {time.monotonic() - started:5.1f}s] {message}", file=sys.stderr, flush=True)

    return say
