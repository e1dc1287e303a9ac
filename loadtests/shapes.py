"""Load shapes (`LoadTestShape`): how many users run at each second of a rehearsal.

- `WaveOpeningShape`: a wave opening (build-up, spike at opening, decay) taken from a simulator
  scenario's arrival intensity λ(t) (`simulator.scenario` + `simulator.arrivals`, the same files
  `gelombang simulate` uses), compressed into `--shape-duration` seconds and scaled so the
  arrival peak is `--peak-users` concurrent users.
- `StepUpShape`: add `--step-users` every `--step-seconds` up to `--step-max-users`, to find where
  the service breaks (read the `_stats_history.csv` per step, see docs/loadtesting.md).

Each shape lives in its own locustfile (`wave_opening.py`, `stress.py`): Locust uses the first
shape class it finds, so one file must not hold two.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from locust import LoadTestShape
from locust.stats import calculate_response_time_percentile

from loadtests import stepping
from loadtests.curves import OpeningWindow, user_curve
from loadtests.options import LoadSettings
from loadtests.runtime import load_settings
from loadtests.stepping import StepRecord

log = logging.getLogger("loadtests.shapes")

CURVE_POINTS = 400  # resolution of the compressed curve
ORIGIN_PREFIX = "origin "  # users.py names origin requests "origin <step>"
SPAWN_RATE_FLOOR = 5.0


def _settings(shape: LoadTestShape) -> LoadSettings:
    if shape.runner is None:  # Locust sets it before the first tick
        raise RuntimeError("load shape ticked without a runner")
    return load_settings(shape.runner.environment)


class WaveOpeningShape(LoadTestShape):
    _curve: list[float] | None = None  # computed at the first tick

    def curve(self) -> list[float]:
        if self._curve is None:
            scenario = _settings(self).scenario
            window = OpeningWindow.of(scenario)
            self._curve = user_curve(scenario.arrival_process(), window, CURVE_POINTS)
        return self._curve

    def tick(self) -> tuple[int, float] | None:
        settings = _settings(self)
        run_time: float = self.get_run_time()  # type: ignore[no-untyped-call]  # unannotated in locust
        if run_time >= settings.shape_duration_s:
            return None
        curve = self.curve()
        index = min(len(curve) - 1, int(run_time / settings.shape_duration_s * len(curve)))
        users = max(1, math.ceil(settings.peak_users * curve[index]))
        # Fast enough to reach the spike within one tick (Locust ticks once a second).
        spawn_rate = max(SPAWN_RATE_FLOOR, float(settings.peak_users))
        return users, spawn_rate


@dataclass(frozen=True)
class _Snapshot:
    at: float
    requests: int
    failures: int
    response_times: dict[int, int]


class StepUpShape(LoadTestShape):
    """Each step is measured from Locust's stats of the queue's requests (aggregated, so it
    works on a master) and recorded in `stepping.RECORDS`; the verdict prints them with the
    breaking point (`--step-max-fail-ratio`, `--step-max-p95-ms`)."""

    _step = 0
    _started: _Snapshot | None = None

    def tick(self) -> tuple[int, float] | None:
        settings = _settings(self)
        run_time: float = self.get_run_time()  # type: ignore[no-untyped-call]  # unannotated in locust
        step = int(run_time // settings.step_seconds) + 1
        if step != self._step:
            if self._close_step(settings) and settings.stop_at_break:
                return None
            self._step = step
            self._started = self._snapshot()
        users = step * settings.step_users
        if users > settings.step_max_users:
            return None
        return users, max(SPAWN_RATE_FLOOR, settings.step_users / 2.0)

    def _snapshot(self) -> _Snapshot:
        """Queue requests only: the origin behind it has its own, deliberately small, capacity
        and its latency would hide the queue's breaking point."""
        requests = failures = 0
        times: Counter[int] = Counter()
        for entry in _runner(self).stats.entries.values():
            if entry.name.startswith(ORIGIN_PREFIX):
                continue
            requests += entry.num_requests
            failures += entry.num_failures
            times.update(entry.response_times)
        return _Snapshot(time.monotonic(), requests, failures, dict(times))

    def _close_step(self, settings: LoadSettings) -> bool:
        """Record the step that just ended; True when it broke the limits."""
        if self._started is None:
            return False
        before, after = self._started, self._snapshot()
        times = {
            ms: count - before.response_times.get(ms, 0)
            for ms, count in after.response_times.items()
            if count > before.response_times.get(ms, 0)
        }
        answered = sum(times.values())
        record = StepRecord(
            step=self._step,
            users=self._step * settings.step_users,
            seconds=after.at - before.at,
            requests=after.requests - before.requests,
            failures=after.failures - before.failures,
            p95_ms=calculate_response_time_percentile(times, answered, 0.95) if answered else None,
        )
        stepping.RECORDS.append(record)
        reason = stepping.broken(record, settings.step_limits)
        log.info(
            "step %d: %d users, %.1f req/s, %.1f%% failed, p95 %s ms%s",
            record.step,
            record.users,
            record.rps,
            100 * record.fail_ratio,
            record.p95_ms,
            f" -- BROKEN: {reason}" if reason else "",
        )
        return reason is not None


def _runner(shape: LoadTestShape) -> Any:
    if shape.runner is None:
        raise RuntimeError("load shape ticked without a runner")
    return shape.runner
