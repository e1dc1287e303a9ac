"""What a live run watches besides its registrants: the origin's in-flight requests (its
/metrics), the queue's counters (the admin API, or the public wave info without a token), the
admission cursor as status answers show it, and a progress line a second.

`LiveCounts` is the run's state right now, shared by the registrants (who holds a place, who
is in the flow, requests outstanding at the origin) and the samplers (what the origin and the
queue said last).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from simulator.driver.progress import progress_line
from simulator.records import RegistrantOutcome, RunTotals, TimeSeries
from simulator.wave_admin import SAMPLE_TIMEOUT_S, WaveAdmin

SAMPLE_EVERY_S = 0.2
ORIGIN_GAUGES = ("gelombang_origin_inflight", "gelombang_origin_capacity")


@dataclass
class LiveCounts:
    waiting: int = 0
    """Registrants holding a place in the queue."""
    active: int = 0
    """Admitted registrants in the registration flow."""
    client_inflight: int = 0
    """Requests this driver has outstanding at the origin."""
    origin_inflight: int = 0
    """In-flight requests as the origin counts them (or, without its metrics, ours)."""
    origin_capacity: int | None = None
    queue_waiting: int | None = None
    """Waiting and pre-queue tickets as the queue counts them (None: not read yet)."""
    queue_counts: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    """(t, the queue's counters) from the admin API, when the run has a token."""


class CursorTrace:
    """When admission reached each ticket joined after opening (admitted, or skipped because
    its holder had gone), from the admission cursor the status answers show (seq - 1 -
    ahead), kept only when it moved."""

    def __init__(self) -> None:
        self.points: list[tuple[float, int]] = []
        self.seqs: dict[int, int] = {}  # registrant -> the seq of its latest post-opening ticket

    def placed(self, index: int, seq: int | None) -> None:
        """A new place: `seq` for one in line after the opening, None otherwise."""
        self.seqs.pop(index, None)
        if seq is not None:
            self.seqs[index] = seq

    def saw(self, index: int, ahead: int | None, now: float) -> None:
        seq = self.seqs.get(index)
        if seq is None or ahead is None:
            return
        cursor = seq - 1 - ahead
        if not self.points or cursor > self.points[-1][1]:
            self.points.append((now, cursor))

    def fill(self, outcomes: Iterable[RegistrantOutcome]) -> None:
        """Set each outcome's `reached_t`: the first answer with the cursor past its ticket."""
        times = [t for t, _ in self.points]
        cursors = [c for _, c in self.points]
        for outcome in outcomes:
            seq = self.seqs.get(outcome.index)
            if seq is None:
                continue
            k = bisect.bisect_left(cursors, seq)
            if k < len(times):
                outcome.reached_t = max(times[k], outcome.joined_t or 0.0)


def gauges(text: str, names: tuple[str, ...]) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in names:
            for sample in family.samples:
                values[family.name] = sample.value
    return values


class Samplers:
    """The run's background loops: samples every SAMPLE_EVERY_S, progress every second."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        mode: str,
        origin_url: str,
        queue_url: str | None,
        wave: str,
        admin: WaveAdmin | None,
        admit_rate: float,
        series: TimeSeries,
        counts: LiveCounts,
        clock: Callable[[], float],
    ) -> None:
        self.session = session
        self.mode = mode
        self.origin_url = origin_url
        self.queue_url = queue_url
        self.wave = wave
        self.admin = admin
        self.admit_rate = admit_rate
        self.series = series
        self.counts = counts
        self.now = clock

    async def sample_loop(self) -> None:
        while True:
            t = self.now()
            await self._sample_origin()
            if self.queue_url is not None:
                await self._sample_queue()
            counts, series = self.counts, self.series
            series.peak("origin_inflight", t, counts.origin_inflight)
            if counts.origin_capacity is not None:
                series.set("origin_capacity", t, counts.origin_capacity)
            if self.mode == "queued":
                series.set("admit_rate_target", t, self.admit_rate)
                waiting = counts.queue_waiting
                series.set("queue_length", t, counts.waiting if waiting is None else waiting)
            series.set("active", t, counts.active)
            await asyncio.sleep(SAMPLE_EVERY_S)

    async def progress_loop(self, out: TextIO, outcomes: list[RegistrantOutcome]) -> None:
        while True:
            await asyncio.sleep(1.0)
            counts = self.counts
            line = progress_line(
                self.mode,
                self.now(),
                RunTotals.from_run(self.series, outcomes),
                waiting=counts.waiting,
                origin_inflight=counts.origin_inflight,
                origin_capacity=counts.origin_capacity,
            )
            print(line, file=out, flush=True)

    async def _sample_origin(self) -> None:
        """In-flight requests as the origin counts them (its /metrics), or, for an origin
        without them, requests this driver has outstanding."""
        counts = self.counts
        try:
            async with self.session.get(
                self.origin_url + "/metrics", timeout=aiohttp.ClientTimeout(SAMPLE_TIMEOUT_S)
            ) as response:
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError):
            counts.origin_inflight = counts.client_inflight
            return
        values = gauges(text, ORIGIN_GAUGES)
        counts.origin_inflight = int(values.get(ORIGIN_GAUGES[0], counts.client_inflight))
        if ORIGIN_GAUGES[1] in values:
            counts.origin_capacity = int(values[ORIGIN_GAUGES[1]])

    async def _sample_queue(self) -> None:
        if self.admin is not None:
            sample = await self.admin.counts(self.wave)
            if sample is not None:
                self.counts.queue_counts.append((self.now(), sample))
                self.counts.queue_waiting = sample.get("waiting", 0) + sample.get("prequeue", 0)
            return
        try:
            async with self.session.get(
                f"{self.queue_url}/api/v1/waves/{self.wave}",
                timeout=aiohttp.ClientTimeout(SAMPLE_TIMEOUT_S),
            ) as response:
                body = orjson.loads(await response.read()) if response.status == 200 else {}
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
            return
        if isinstance(body, dict) and isinstance(body.get("waiting"), int):
            self.counts.queue_waiting = body["waiting"]

    def queue_series(self) -> int | None:
        """Admissions per second, taken slots and waiting tickets from the queue's own
        counters (one definition with the model); returns the queue's admissions in the run,
        or None without an admin token (the series then hold what the registrants saw)."""
        samples = self.counts.queue_counts
        if len(samples) < 2:
            return None
        series = self.series
        series.admissions = [0] * len(series)
        for (_, a), (t, b) in itertools.pairwise(samples):
            series.add("admissions", t, b["admitted"] - a["admitted"])
        for t, counts in samples:
            series.set("active", t, counts["active"])
            series.set("queue_length", t, counts["waiting"] + counts["prequeue"])
        return samples[-1][1]["admitted"] - samples[0][1]["admitted"]
