"""What the autopilot did during a live run, beside what the origin did: the pieces the demo
and the autopilot benchmark (loadtests/bench/autopilot.py) share.

- `PrometheusServer`: a real Prometheus on a free loopback port, scraping the origin every
  second (the autopilot reads its signals from it, as in production).
- `autopilot_settings(...)`: the wave's `autopilot` object with queries over a short window,
  so that a run of a minute or two holds a few dozen decisions.
- `OriginWatch`: samples the origin's own /metrics (answers, 5xx, completed registrations,
  capacity) and the wave's admin view (max_active, the latency signal) every half second, and
  can take the origin's capacity away mid-run (its admin API).
- `read_decisions(...)`: the autopilot's decision log from Redis.
- `AutopilotTrace`: the lot, in run time (seconds since the driver started), with the figures
  the demo prints and tests check.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gelombang_harness import ChildProcess, HttpReady
from queue_service.keys import WaveKeys
from queue_service.redis_server import free_port

SAMPLE_EVERY_S = 0.5
SCRAPE_INTERVAL_S = 1.0


class PrometheusServer(ChildProcess):
    """A real Prometheus on a free loopback port scraping `target` ("host:port") every second."""

    def __init__(self, work_dir: Path, target: str) -> None:
        executable = shutil.which("prometheus")
        if executable is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        work_dir.mkdir(parents=True, exist_ok=True)
        interval = f"{SCRAPE_INTERVAL_S:g}s"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [{"job_name": "origin", "static_configs": [{"targets": [target]}]}],
        }
        path = work_dir / "prometheus.yml"
        path.write_text(json.dumps(config))  # JSON is YAML: no YAML library needed
        self.url = f"http://127.0.0.1:{free_port()}"
        super().__init__(
            "prometheus",
            [executable, f"--config.file={path}", f"--storage.tsdb.path={work_dir / 'tsdb'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            log=work_dir / "prometheus.log",
            ready=HttpReady(f"{self.url}/-/ready"),
            ready_timeout_s=30.0,
        )  # fmt: skip


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None


def autopilot_settings(
    prometheus_url: str,
    *,
    max_active: int,
    min_active: int,
    interval_s: float,
    window_s: int,
    latency_target_s: float,
    error_target: float = 0.02,
) -> dict[str, Any]:
    """The wave's `autopilot` object: the default queries, over `window_s` instead of a
    minute (a few scrapes: the signal reflects the last interval or two)."""
    window = f"{window_s}s"
    return {
        "mode": "on",
        "prometheus_url": prometheus_url,
        "latency_query": (
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(gelombang_origin_request_duration_seconds_bucket[{window}])))"
        ),
        "latency_target_s": latency_target_s,
        "error_query": (
            f'sum(rate(gelombang_origin_requests_total{{status_class="5xx"}}[{window}])) '
            f"/ clamp_min(sum(rate(gelombang_origin_requests_total[{window}])), 1e-9)"
        ),
        "error_target": error_target,
        "min_active": min_active,
        "max_active": max_active,
        "interval_s": interval_s,
        "manual_hold_s": 600,
    }


@dataclass(frozen=True)
class Sample:
    """The origin's counters (cumulative) and the wave's admission setting at run time t."""

    t: float
    capacity: int
    answers: float
    errors: float
    """5xx answers: overloaded (503) and timed out (504) included."""
    completed: float
    max_active: int | None
    latency_s: float | None
    """The autopilot's last latency signal (None with the autopilot off)."""


@dataclass(frozen=True)
class Decision:
    t: float
    action: str
    target: int
    reason: str
    active: int = 0
    session_s: float = 0.0
    rate: float = 0.0


def origin_counters(text: str) -> dict[str, float]:
    """Answers, 5xx, completed registrations and capacity from the origin's /metrics."""
    values = {"answers": 0.0, "errors": 0.0, "completed": 0.0, "capacity": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gelombang_origin_requests_total":
                values["answers"] += sample.value
                if sample.labels.get("status_class") == "5xx":
                    values["errors"] += sample.value
            elif sample.name == "gelombang_origin_registrations_completed_total":
                values["completed"] = sample.value
            elif sample.name == "gelombang_origin_capacity":
                values["capacity"] = sample.value
    return values


@dataclass
class OriginWatch:
    """Samples the origin and the wave while a run goes on (`watch`), and takes capacity away
    at a given time (`set_capacity_at`). Times are from `clock`, the run's."""

    http: aiohttp.ClientSession
    origin_url: str
    queue_url: str
    wave: str
    admin_token: str
    clock: Callable[[], float]
    samples: list[Sample] = field(default_factory=list)

    async def watch(self) -> None:
        admin = {"Authorization": f"Bearer {self.admin_token}"}
        timeout = aiohttp.ClientTimeout(total=2.0)
        while True:
            t = self.clock()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with self.http.get(f"{self.origin_url}/metrics", timeout=timeout) as answer:
                    counters = origin_counters(await answer.text())
                async with self.http.get(
                    f"{self.queue_url}/admin/v1/waves/{self.wave}", headers=admin, timeout=timeout
                ) as answer:
                    view: dict[str, Any] = await answer.json() if answer.status == 200 else {}
                signals = (view.get("autopilot") or {}).get("signals") or {}
                self.samples.append(
                    Sample(
                        t=t,
                        capacity=int(counters["capacity"]),
                        answers=counters["answers"],
                        errors=counters["errors"],
                        completed=counters["completed"],
                        max_active=(view.get("wave") or {}).get("max_active"),
                        latency_s=signals.get("latency_s"),
                    )
                )
            await asyncio.sleep(max(0.0, t + SAMPLE_EVERY_S - self.clock()))

    async def set_capacity_at(self, at_s: float, capacity: int, origin_token: str) -> None:
        await asyncio.sleep(max(0.0, at_s - self.clock()))
        async with self.http.put(
            f"{self.origin_url}/api/v1/admin/capacity",
            json={"capacity": capacity},
            headers={"Authorization": f"Bearer {origin_token}"},
        ) as response:
            response.raise_for_status()


async def read_decisions(redis_url: str, wave: str, started_wall: float) -> list[Decision]:
    """The autopilot's decision log (Redis stream), in run time from `started_wall`."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await client.xrange(WaveKeys(wave).prefix + "ap:log"),
        )
    finally:
        await client.aclose()
    return [
        Decision(
            t=int(str(entry_id).split("-")[0]) / 1000 - started_wall,
            action=fields.get("action", ""),
            target=int(fields["target"]),
            reason=fields.get("reason", ""),
            active=int(fields.get("active") or 0),
            session_s=float(fields.get("session_s") or 0),
            rate=float(fields.get("rate") or 0),
        )
        for entry_id, fields in entries
        if "target" in fields and "index" in fields
    ]


def sample_at(samples: list[Sample], t: float) -> Sample:
    """The first sample at or after t (the last one if none)."""
    return next((s for s in samples if s.t >= t), samples[-1])


def error_ratio(a: Sample, b: Sample) -> float:
    answers = b.answers - a.answers
    return (b.errors - a.errors) / answers if answers > 0 else 0.0


@dataclass
class AutopilotTrace:
    """One run through the queue with the autopilot on, while the origin lost capacity."""

    configured_max_active: int
    capacity_before: int
    capacity_after: int
    capacity_drop_at_s: float
    samples: list[Sample] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    final_target: int | None = None
    """The target the admin view showed at the end of the run (from Redis)."""
    unprotected_samples: list[Sample] = field(default_factory=list)
    """The same origin's counters in the run without Gelombang (the same drop, same crowd)."""

    def first_cut_after_drop(self) -> Decision | None:
        return next(
            (
                d
                for d in self.decisions
                if d.t >= self.capacity_drop_at_s and d.action == "decrease"
            ),
            None,
        )

    def window(
        self, start_s: float, end_s: float, samples: list[Sample] | None = None
    ) -> tuple[float, float, float]:
        """(answers, 5xx, seconds) of the origin between two run times, from its /metrics."""
        samples = self.samples if samples is None else samples
        a, b = sample_at(samples, start_s), sample_at(samples, end_s)
        return b.answers - a.answers, b.errors - a.errors, max(b.t - a.t, 0.0)

    def figures(self) -> dict[str, Any]:
        """What the demo prints: the origin's errors while the setting from before the drop
        was still in force after it (until the autopilot's first cut), and from the cut to
        the end, from the origin's own counters."""
        end = self.samples[-1].t if self.samples else self.capacity_drop_at_s
        cut = self.first_cut_after_drop()
        figures: dict[str, Any] = {
            "configured_max_active": self.configured_max_active,
            "final_target": self.final_target,
            "capacity_before": self.capacity_before,
            "capacity_after": self.capacity_after,
            "capacity_drop_at_s": round(self.capacity_drop_at_s, 1),
            "target_at_drop": next(
                (d.target for d in reversed(self.decisions) if d.t < self.capacity_drop_at_s),
                self.configured_max_active,
            ),
            "first_cut_at_s": None if cut is None else round(cut.t, 1),
            "first_cut_to": None if cut is None else cut.target,
            "lowest_target": min((d.target for d in self.decisions), default=None),
        }
        if cut is not None and self.samples:
            before = self.window(self.capacity_drop_at_s, cut.t)
            after = self.window(cut.t, end)
            figures["before_cut"] = {"answers": before[0], "errors": before[1], "s": before[2]}
            figures["after_cut"] = {"answers": after[0], "errors": after[1], "s": after[2]}
        if self.samples:
            through = self.window(self.capacity_drop_at_s, end)
            figures["after_drop"] = {"answers": through[0], "errors": through[1], "s": through[2]}
        if self.unprotected_samples:
            unprotected_end = self.unprotected_samples[-1].t
            direct = self.window(self.capacity_drop_at_s, unprotected_end, self.unprotected_samples)
            figures["after_drop_without_gelombang"] = {
                "answers": direct[0], "errors": direct[1], "s": direct[2],
            }  # fmt: skip
        return figures

    def to_json(self) -> dict[str, Any]:
        return {
            "figures": self.figures(),
            "samples": [asdict(s) for s in self.samples],
            "decisions": [asdict(d) for d in self.decisions],
            "unprotected_samples": [asdict(s) for s in self.unprotected_samples],
        }

    def lines(self) -> list[str]:
        """The demo's printed autopilot lines (every number from the trace)."""
        f = self.figures()
        text = [
            f"autopilot on: the origin lost half its capacity at {f['capacity_drop_at_s']:g} s "
            f"({f['capacity_before']} -> {f['capacity_after']} workers); max_active "
            f"{f['configured_max_active']} configured, {f['final_target']} at the end "
            f"(lowest {f['lowest_target']})"
        ]
        if f["first_cut_at_s"] is None:
            text.append("autopilot: no cut after the capacity drop (the origin stayed healthy)")
        else:
            before, after = f["before_cut"], f["after_cut"]
            text.append(
                f"autopilot: cut max_active to {f['first_cut_to']} at {f['first_cut_at_s']:g} s, "
                f"{f['first_cut_at_s'] - f['capacity_drop_at_s']:.1f} s after the drop; the "
                f"origin answered {_share(before)} 5xx until then ({before['errors']:.0f} of "
                f"{before['answers']:.0f} in {before['s']:.1f} s, max_active "
                f"{f['target_at_drop']}), {_share(after)} from the cut to the end "
                f"({after['errors']:.0f} of {after['answers']:.0f} in {after['s']:.1f} s)"
            )
        if "after_drop_without_gelombang" in f:
            through, direct = f["after_drop"], f["after_drop_without_gelombang"]
            text.append(
                f"after the drop: the origin answered {_share(through)} 5xx through Gelombang "
                f"with the autopilot ({through['errors']:.0f} of {through['answers']:.0f}); "
                f"without Gelombang, the same drop and crowd, {_share(direct)} "
                f"({direct['errors']:.0f} of {direct['answers']:.0f})"
            )
        return text

    def timeline(self, every_s: float = 2.0) -> list[tuple[float, int, int, float, float]]:
        """(t, capacity, max_active, 5xx per second, p95 signal) every `every_s`."""
        if not self.samples:
            return []
        points = [
            sample_at(self.samples, t)
            for t in itertools.takewhile(
                lambda t: t <= self.samples[-1].t, itertools.count(0.0, every_s)
            )
        ]
        return [
            (
                b.t,
                b.capacity,
                b.max_active or 0,
                (b.errors - a.errors) / max(b.t - a.t, 1e-9),
                b.latency_s or 0.0,
            )
            for a, b in itertools.pairwise(points)
        ]


def _share(window: dict[str, float]) -> str:
    return f"{window['errors'] / window['answers']:.1%}" if window["answers"] else "0.0%"
