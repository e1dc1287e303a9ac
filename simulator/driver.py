"""The live driver: synthetic registrants arriving at a real queue and a real origin.

One asyncio task per registrant and one shared `aiohttp.ClientSession`, so one process holds
thousands of registrants at once (they spend nearly all their time asleep between polls).
Every run is bounded: at most `max_registrants` arrivals and `max_seconds` of wall time, after
which every registrant still running is cancelled and recorded as `run_ended`. Targets must be
loopback addresses: this tool generates a flood and must never be pointed at someone else.

- `direct` mode: each registrant goes straight to the origin and runs the registration flow,
  retrying errors the way people do (`simulator.behaviour.retry_delay_s`).
- `queued` mode: join the wave, poll status at `poll_after_ms` (manual refreshers and bots
  their own way; Retry-After honoured by humans only), balk or renege by patience (silently or
  with `leave`), and when admitted run the flow with the admission token, then `complete`.

Times in the record are seconds since the start of the run (t = 0).
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import datetime as dt
import ipaddress
import itertools
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp
import jwt
import orjson
from prometheus_client.parser import text_string_to_metric_families

from simulator import behaviour, sessions
from simulator.flow import STEPS, FlowContext, StepResult, pick_photo, run_step
from simulator.records import (
    MODE_TITLES,
    RegistrantOutcome,
    RunMeta,
    RunRecord,
    RunTotals,
    TimeSeries,
)
from simulator.registrants import Registrant
from simulator.scenario import Scenario
from simulator.stats import kendall_tau_b

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
SYNTHETIC_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")
"""Shared address space (RFC 6598, carrier-grade NAT): each synthetic registrant claims one
of these in X-Forwarded-For, never a routable address. Nothing is ever sent to them."""
QUEUE_TIMEOUT_S = 10.0
SAMPLE_EVERY_S = 0.2


def synthetic_address(index: int) -> str:
    """Registrant `index`'s own client address, the same in every run."""
    offset = (index * 2_654_435_761) % (SYNTHETIC_NETWORK.num_addresses - 2) + 1
    return str(SYNTHETIC_NETWORK.network_address + offset)


class NotLoopback(ValueError):
    """A target URL that is not on this machine."""


def require_loopback(url: str, what: str) -> str:
    """Return `url` without a trailing slash, or raise if its host is not loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotLoopback(f"{what} must be an http:// URL, got {url!r}")
    host = parts.hostname
    if host.lower() not in LOOPBACK_NAMES:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise NotLoopback(
                f"{what} {url!r} is not a loopback address: the simulator only drives servers "
                "on this machine (127.0.0.1, ::1 or localhost)"
            )
    return url.rstrip("/")


def wave_settings(scenario: Scenario, origin_url: str, started_wall: float) -> dict[str, Any]:
    """The wave a queued run drives, from the scenario: it opens `clock.opens_at_s` and
    closes `clock.closes_at_s` after the run starts at `started_wall` (Unix seconds)."""
    wave, clock = scenario.wave, scenario.clock
    body: dict[str, Any] = {
        "opens_at": started_wall + clock.opens_at_s,
        "closes_at": started_wall + clock.closes_at_s,
        "admit_rate": wave.admit_rate,
        "max_active": wave.max_active,
        "session_ttl_s": wave.session_ttl_s,
        "quota": wave.quota,
        "prequeue_s": wave.prequeue_s,
        "abandon_after_s": wave.abandon_after_s,
        "expected_session_s": wave.expected_session_s,
        "origin_url": origin_url + "/",
    }
    if wave.verified_joins:  # the origin signs registrants in and vouches for them
        body["verified_joins"] = True
        body["enqueue_jwks_url"] = origin_url + "/.well-known/enqueue-jwks.json"
    if wave.admit_burst > 0:
        body["admit_burst"] = wave.admit_burst
    return body


@dataclass(frozen=True)
class DriverConfig:
    mode: str  # "direct" or "queued"
    origin_url: str
    queue_url: str | None = None
    max_registrants: int = 5000
    max_seconds: float = 120.0
    seed: int | None = None  # None: the scenario's seed
    admin_token: str | None = None  # queued: (re)configure the wave to open relative to t = 0
    connection_limit: int = 2000  # open connections at once, shared by every registrant
    progress: TextIO | None = sys.stderr
    wave: str | None = None  # None: the scenario's wave id

    def __post_init__(self) -> None:
        if self.mode not in ("direct", "queued"):
            raise ValueError(f"mode must be direct or queued, got {self.mode!r}")
        require_loopback(self.origin_url, "--origin-url")
        if self.mode == "queued":
            if not self.queue_url:
                raise ValueError("queued mode needs the queue URL")
            require_loopback(self.queue_url, "--queue-url")
        if self.max_registrants < 1 or self.max_seconds <= 0:
            raise ValueError("max_registrants and max_seconds must be positive")


@dataclass
class Admission:
    """One admission as the queue signed it (for fairness checks): the token's claims."""

    index: int
    prequeue: bool
    joined_t: float
    admitted_t: float  # when the queue admitted (from the token), run seconds
    noticed_t: float  # when the registrant's poll saw it
    ticket: int | None
    issued_at: int | None


@dataclass
class DriverStats:
    """What the driver saw beyond the run record."""

    complete_calls: int = 0
    complete_failures: int = 0
    completed_at_queue: set[int] = field(default_factory=set)
    """Registrants whose `complete` call the queue acknowledged (204)."""
    peak_live_registrants: int = 0
    admissions: list[Admission] = field(default_factory=list)
    wall_s: float = 0.0
    step_seconds: dict[str, list[float]] = field(default_factory=dict)
    """Origin steps answered: [count, total seconds] each, as the registrants timed them (the
    origin's real speed on this machine, for a model of the same run)."""
    give_up_details: Counter[str] = field(default_factory=Counter)
    """Why registrants stopped, finer than the record's reasons (e.g. `rejected: origin 409
    nik_taken at ktp`)."""


@dataclass
class LiveResult:
    record: RunRecord
    stats: DriverStats


class GiveUp(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or reason


class LiveRun:
    def __init__(
        self, scenario: Scenario, config: DriverConfig, session: aiohttp.ClientSession
    ) -> None:
        self.scenario = scenario
        self.config = config
        self.session = session
        self.seed = scenario.seed if config.seed is None else config.seed
        self.population = scenario.population(self.seed)
        self.params = scenario.behaviour
        self.wave = config.wave or scenario.wave.id
        self.origin_url = require_loopback(config.origin_url, "--origin-url")
        self.queue_url = (
            require_loopback(config.queue_url, "--queue-url") if config.queue_url else None
        )
        self.duration_s = min(config.max_seconds, scenario.clock.duration_s)
        self.series = TimeSeries.empty(self.duration_s)
        self.outcomes: list[RegistrantOutcome] = []
        self.stats = DriverStats()
        self.origin_capacity: int | None = None
        self.origin_timeout_s = scenario.origin.timeout_s
        self._t0 = time.monotonic()
        self._t0_wall = time.time()
        self._waiting = 0
        self._active = 0
        self._queue_waiting: int | None = None
        self._queue_counts: list[tuple[float, dict[str, int]]] = []
        """(t, the queue's counters) from the admin API, when the run has a token."""
        self._cursor: list[tuple[float, int]] = []
        """(t, the admission cursor) as status answers showed it (seq - 1 - ahead of a ticket
        joined after opening), only when it moved: when admission reached each ticket."""
        self._seqs: dict[int, int] = {}  # registrant -> the seq of its (latest) post-opening ticket
        self._origin_inflight = 0
        self._client_inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ time

    def now(self) -> float:
        return time.monotonic() - self._t0

    async def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------ the run

    async def run(self) -> LiveResult:
        started_wall = time.time()
        self._t0 = time.monotonic()
        self._t0_wall = started_wall
        if self.config.mode == "queued" and self.config.admin_token:
            await self._configure_wave(started_wall)
        progress = asyncio.create_task(self._progress_loop())
        background = [asyncio.create_task(self._sample_loop()), progress]
        try:
            async with asyncio.timeout(self.duration_s):
                await self._spawn_arrivals()
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
        except TimeoutError:
            pass
        finally:
            # No progress line while registrants are being stopped: the next one is the last.
            progress.cancel()
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=5)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        end = self.now()
        for outcome in self.outcomes:
            if outcome.completed_t is None and outcome.gave_up_t is None:
                outcome.gave_up_t, outcome.gave_up_reason = end, "run_ended"
        self._fill_reached()
        queue_side = self._queue_series()
        self.stats.wall_s = end
        queued = self.config.mode == "queued"
        wave = self.scenario.wave
        meta = RunMeta(
            mode=self.config.mode,
            scenario=self.scenario.name,
            seed=self.seed,
            source="live",
            population=len(self.outcomes),
            duration_s=self.duration_s,
            opens_at_s=self.scenario.clock.opens_at_s,
            prequeue_s=self.scenario.wave.prequeue_s,
            admit_rate=wave.admit_rate if queued else None,
            admit_burst=wave.burst if queued else None,
            max_active=wave.max_active if queued else None,
            session_ttl_s=wave.session_ttl_s if queued else None,
            abandon_after_s=wave.abandon_after_s if queued else None,
            origin_capacity=self.origin_capacity,
            quota=self.scenario.wave.quota or None,
            started_at=dt.datetime.fromtimestamp(started_wall, dt.UTC).isoformat(),
            notes=[f"live run: {len(self.outcomes)} registrants, {end:.1f} s"],
        )
        self.outcomes.sort(key=lambda o: o.index)
        record = RunRecord.build(meta, self.series, self.outcomes)
        if queue_side is not None:
            record.totals.queue_admitted = queue_side
            record.totals.lapsed = max(0, queue_side - record.totals.admitted)
            meta.notes.append("admissions, active and queue_length are the queue's own counters")
        record.totals.peak_live_registrants = self.stats.peak_live_registrants
        # The last line comes from the closed record, the numbers the summary shows.
        if self.config.progress is not None:
            print(final_progress_line(record, end), file=self.config.progress, flush=True)
        return LiveResult(record, self.stats)

    def _fill_reached(self) -> None:
        """When admission reached each post-opening ticket, from the cursor the status
        answers showed (admitted, or skipped because its holder had gone)."""
        times = [t for t, _ in self._cursor]
        cursors = [c for _, c in self._cursor]
        for outcome in self.outcomes:
            seq = self._seqs.get(outcome.index)
            if seq is None:
                continue
            k = bisect.bisect_left(cursors, seq)  # the first answer with the cursor past it
            if k < len(times):
                outcome.reached_t = max(times[k], outcome.joined_t or 0.0)

    def _queue_series(self) -> int | None:
        """Admissions per second, taken slots and waiting tickets from the queue's own
        counters (one definition with the model); returns the queue's admissions in the run,
        or None without an admin token (the series then hold what the registrants saw)."""
        samples = self._queue_counts
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

    async def _configure_wave(self, started_wall: float) -> None:
        """Open the wave `opens_at_s` after t = 0, so the run sees the whole opening."""
        assert self.queue_url is not None
        body = wave_settings(self.scenario, self.origin_url, started_wall)
        async with self.session.put(
            f"{self.queue_url}/admin/v1/waves/{self.wave}",
            data=orjson.dumps(body),
            headers={
                "Authorization": f"Bearer {self.config.admin_token}",
                "Content-Type": "application/json",
            },
            timeout=aiohttp.ClientTimeout(QUEUE_TIMEOUT_S),
        ) as response:
            if response.status >= 300:
                text = await response.text()
                raise RuntimeError(
                    f"could not configure wave {self.wave}: {response.status} {text}"
                )

    async def _spawn_arrivals(self) -> None:
        # Each person arrives once: the Poisson draw may exceed the population by a little.
        limit = min(self.config.max_registrants, len(self.population))
        times = self.scenario.arrival_process().times(self.seed, limit=limit)
        for index, t in enumerate(times):
            if t >= self.duration_s:
                break
            await self.sleep_until(t)
            registrant = self.population[index]
            outcome = RegistrantOutcome(index=index, is_bot=registrant.is_bot, arrival_t=self.now())
            self.outcomes.append(outcome)
            self.series.add("arrivals", outcome.arrival_t)
            task = asyncio.create_task(self._registrant(registrant, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self.stats.peak_live_registrants = max(
                self.stats.peak_live_registrants, len(self._tasks)
            )

    async def _registrant(self, r: Registrant, outcome: RegistrantOutcome) -> None:
        rng = random.Random(f"{self.seed}:{r.index}:{self.config.mode}")
        try:
            if self.config.mode == "direct":
                await self._flow(r, outcome, rng, token=None)
            else:
                await self._queued(r, outcome, rng)
        except GiveUp as stop:
            self._give_up(outcome, stop.reason)
            self.stats.give_up_details[stop.detail] += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not take the other registrants down
            log.exception("registrant %d failed", r.index)
            self._give_up(outcome, "errors")

    def _give_up(self, outcome: RegistrantOutcome, reason: str) -> None:
        if outcome.gave_up_t is None and outcome.completed_t is None:
            outcome.gave_up_t, outcome.gave_up_reason = self.now(), reason
            self.series.add("gave_up", outcome.gave_up_t)

    # ------------------------------------------------------------------ the origin flow

    async def _flow(
        self, r: Registrant, outcome: RegistrantOutcome, rng: random.Random, token: str | None
    ) -> None:
        ctx = FlowContext(r, photo=pick_photo(rng))
        drop_at = (
            rng.randrange(len(STEPS)) if behaviour.drops_out_in_flow(rng, self.params) else None
        )
        # the person's own time on the forms, between requests (simulator.sessions)
        think_s = sessions.think_time_s(rng, self.scenario.origin) / len(STEPS)
        for position, step in enumerate(STEPS):
            if position == drop_at:
                raise GiveUp("abandoned")
            await asyncio.sleep(think_s)
            attempt = 0
            while True:
                result = await self._origin_request(step, ctx, token, outcome)
                if result.ok:
                    if outcome.first_served_t is None:
                        outcome.first_served_t = self.now()
                    if outcome.admitted_t is None:  # direct mode: first request served
                        outcome.admitted_t = outcome.first_served_t
                        self.series.add("admissions", outcome.admitted_t)
                    break
                if result.failure == "refused":
                    if result.status in (413, None) and step.name == "ktp":
                        ctx.resize_photo()
                        continue
                    if result.status == 429:
                        outcome.rate_limited += 1
                        self.series.add("rate_limited", self.now())
                        await asyncio.sleep(result.retry_after_s or 1.0)
                        continue
                    detail = f"rejected: origin {result.status} {result.error_code} at {step.name}"
                    raise GiveUp("rejected", detail)
                attempt += 1
                delay = behaviour.retry_delay_s(
                    rng, r, attempt, self.params, retry_after_s=result.retry_after_s
                )
                if delay is None:
                    raise GiveUp("errors")
                await asyncio.sleep(delay)
        outcome.completed_t = self.now()
        self.series.add("completions", outcome.completed_t)

    async def _origin_request(
        self, step: Any, ctx: FlowContext, token: str | None, outcome: RegistrantOutcome
    ) -> StepResult:
        outcome.requests += 1
        self._client_inflight += 1
        try:
            result = await run_step(
                self.session,
                self.origin_url,
                step,
                ctx,
                token=token,
                timeout_s=self.origin_timeout_s,
            )
        finally:
            self._client_inflight -= 1
        if result.ok:
            timed = self.stats.step_seconds.setdefault(step.name, [0.0, 0.0])
            timed[0] += 1
            timed[1] += result.elapsed_s
        if result.failure == "timeout" or result.status == 504:
            outcome.errors += 1
            self.series.add("origin_timeouts", self.now())
        elif result.failure == "overload":
            outcome.errors += 1
            self.series.add("origin_errors", self.now())
        return result

    # ------------------------------------------------------------------ through the queue

    async def _queue_call(
        self,
        method: str,
        path: str,
        outcome: RegistrantOutcome,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int | None, dict[str, Any], float | None]:
        assert self.queue_url is not None
        outcome.requests += 1
        kwargs: dict[str, Any] = {
            "headers": dict(headers or {}),
            "timeout": aiohttp.ClientTimeout(QUEUE_TIMEOUT_S),
        }
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
            kwargs["headers"]["Content-Type"] = "application/json"
        try:
            async with self.session.request(method, self.queue_url + path, **kwargs) as response:
                raw = await response.read()
                retry_after = response.headers.get("Retry-After")
                status = response.status
        except (TimeoutError, aiohttp.ClientError):
            return None, {}, None
        try:
            parsed = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            parsed = {}
        if status == 429:
            outcome.rate_limited += 1
            self.series.add("rate_limited", self.now())
        try:
            retry_after_s = float(retry_after) if retry_after else None
        except ValueError:
            retry_after_s = None
        return status, parsed if isinstance(parsed, dict) else {}, retry_after_s

    async def _queued(self, r: Registrant, outcome: RegistrantOutcome, rng: random.Random) -> None:
        base = f"/api/v1/waves/{self.wave}"
        # the registrant's own address, believed by a queue that trusts this proxy
        headers = {"X-Forwarded-For": synthetic_address(r.index)}
        may_return = True
        while True:
            try:
                view = await self._wait(r, outcome, rng, base, headers)
                break
            except GiveUp as stop:
                back = behaviour.returns_later_s(rng, self.params) if may_return else None
                if stop.reason != "reneged" or back is None:
                    raise
            # comes back later, once, with the old ticket: a place still held is handed back
            self._give_up(outcome, "reneged")
            may_return = False
            await asyncio.sleep(back)
            outcome.gave_up_t = outcome.gave_up_reason = None
        token = str(view["token"])
        self._record_admission(outcome, token)
        self._active += 1
        try:
            await self._flow(r, outcome, rng, token=token)
        except GiveUp as stop:
            if stop.reason != "abandoned":  # a silent drop-out holds its slot until the TTL
                await self._complete(base, token, outcome)
            raise
        finally:
            self._active -= 1
        await self._complete(base, token, outcome)

    async def _wait(
        self,
        r: Registrant,
        outcome: RegistrantOutcome,
        rng: random.Random,
        base: str,
        headers: dict[str, str],
    ) -> dict[str, Any]:
        """Join (again), then wait: balk, renege, or the view that carries the token."""
        view = await self._join(r, outcome, rng, base, headers)
        headers["X-Queue-Ticket"] = str(view["ticket"])
        self._waiting += 1
        try:
            if behaviour.balks(rng, r, view.get("state"), view.get("eta_s"), self.params):
                await self._leave(rng, base, headers, outcome)
                raise GiveUp("balked")
            patience_from = behaviour.patience_from(self.now(), self.scenario.clock.opens_at_s)
            failures = 0
            while view.get("state") != "admitted":
                if view.get("state") in ("expired", "closed"):
                    state = view.get("state")
                    reason = "rejected" if state == "closed" else "abandoned"
                    raise GiveUp(reason, f"{reason}: queue said {state}")
                delay = behaviour.poll_delay_s(rng, r, view.get("poll_after_ms"), self.params)
                await asyncio.sleep(delay)
                if behaviour.reneges(r, self.now() - patience_from):
                    await self._leave(rng, base, headers, outcome)
                    raise GiveUp("reneged")
                view, failures = await self._poll(r, rng, base, headers, outcome, failures)
        finally:
            self._waiting -= 1
        return view

    async def _identity(self, r: Registrant, outcome: RegistrantOutcome) -> dict[str, Any]:
        """Who joins: the registrant id, or, in a wave with verified joins, an enqueue token
        from signing in at the origin (a fresh one for every join: they live minutes)."""
        if not self.scenario.wave.verified_joins:
            return {"registrant": r.registrant_id}
        outcome.requests += 1
        try:
            async with self.session.post(
                self.origin_url + "/api/v1/sign-in",
                json={"email": r.email, "phone": r.phone, "wave": self.wave},
                timeout=aiohttp.ClientTimeout(self.origin_timeout_s),
            ) as response:
                body = orjson.loads(await response.read())
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
            raise GiveUp("errors", "errors: sign-in at the origin failed") from None
        if not isinstance(body, dict) or "enqueue_token" not in body:
            raise GiveUp("rejected", f"rejected: sign-in {body}")
        return {"enqueue_token": body["enqueue_token"]}

    async def _join(
        self,
        r: Registrant,
        outcome: RegistrantOutcome,
        rng: random.Random,
        base: str,
        headers: dict[str, str],
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            identity = await self._identity(r, outcome)
            status, body, retry_after = await self._queue_call(
                "POST", f"{base}/join", outcome, body=identity, headers=headers
            )
            if status in (200, 201) and "ticket" in body:
                if body["ticket"] != headers.get("X-Queue-Ticket"):  # a new place
                    outcome.joined_t = self.now()
                    outcome.prequeue = body.get("state") == "prequeue"
                    outcome.position_at_join = body.get("position")
                    outcome.eta_at_join_s = body.get("eta_s")
                    outcome.reached_t = None
                    self._seqs.pop(outcome.index, None)
                    if body.get("state") in ("waiting", "closing", "paused"):
                        self._seqs[outcome.index] = int(str(body["ticket"]).split(".")[0])
                return body
            if status == 409 and _error_code(body) == "wave_not_open_yet":
                await asyncio.sleep(retry_after or 1.0)
                continue
            if status is not None and 400 <= status < 500 and status != 429:
                raise GiveUp("rejected", f"rejected: join {status} {_error_code(body)}")
            attempt += 1
            delay = behaviour.retry_delay_s(rng, r, attempt, self.params, retry_after)
            if delay is None:
                raise GiveUp("errors")
            await asyncio.sleep(delay)

    async def _poll(
        self,
        r: Registrant,
        rng: random.Random,
        base: str,
        headers: dict[str, str],
        outcome: RegistrantOutcome,
        failures: int,
    ) -> tuple[dict[str, Any], int]:
        """One status check from every open tab; returns the freshest view."""
        tabs = behaviour.open_tabs(r)
        answers = await asyncio.gather(
            *(
                self._queue_call("GET", f"{base}/status", outcome, headers=headers)
                for _ in range(tabs)
            )
        )
        for status, body, _ in answers:
            if status == 200 and body.get("state") == "admitted" and body.get("token"):
                return body, 0
        for status, body, _ in answers:
            if status == 200:
                self._saw_cursor(outcome.index, body.get("ahead"))
                return body, 0
        status, body, retry_after = answers[0]
        if status == 401 or status == 404:
            raise GiveUp("rejected", f"rejected: status {status} {_error_code(body)}")
        if status == 429:
            # The waiting page honours Retry-After; a bot does not (and gains nothing).
            if not r.is_bot and retry_after:
                await asyncio.sleep(retry_after)
            return {"state": "waiting", "poll_after_ms": None}, failures
        failures += 1
        delay = behaviour.retry_delay_s(rng, r, failures, self.params, retry_after)
        if delay is None:
            raise GiveUp("errors")
        await asyncio.sleep(delay)
        return {"state": "waiting", "poll_after_ms": None}, failures

    def _saw_cursor(self, index: int, ahead: Any) -> None:
        seq = self._seqs.get(index)
        if seq is None or not isinstance(ahead, int):
            return
        cursor = seq - 1 - ahead
        if not self._cursor or cursor > self._cursor[-1][1]:
            self._cursor.append((self.now(), cursor))

    async def _leave(
        self, rng: random.Random, base: str, headers: dict[str, str], outcome: RegistrantOutcome
    ) -> None:
        if not behaviour.abandons_silently(rng, self.params):
            await self._queue_call("POST", f"{base}/leave", outcome, headers=headers)

    async def _complete(self, base: str, token: str, outcome: RegistrantOutcome) -> None:
        status, _, _ = await self._queue_call(
            "POST", f"{base}/complete", outcome, headers={"Authorization": f"Bearer {token}"}
        )
        self.stats.complete_calls += 1
        if status == 204:
            self.stats.completed_at_queue.add(outcome.index)
        else:
            self.stats.complete_failures += 1

    def _record_admission(self, outcome: RegistrantOutcome, token: str) -> None:
        """Record the admission at the time the queue signed into the token (whole seconds),
        not when this registrant's next poll noticed it: admissions/s and fairness are about
        the queue's decisions, and a poll can come up to 30 s later."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            claims = {}
        assert outcome.joined_t is not None
        noticed = self.now()
        issued_at = claims.get("iat")
        admitted = noticed
        if isinstance(issued_at, int):
            # `iat` is truncated to the second: take the middle of that second.
            signed = issued_at + 0.5 - self._t0_wall
            admitted = min(noticed, max(outcome.joined_t, signed))
        outcome.admitted_t, outcome.noticed_t = admitted, noticed
        outcome.ticket = claims.get("tkt") if isinstance(claims.get("tkt"), int) else None
        outcome.admitted_iat = issued_at if isinstance(issued_at, int) else None
        self.series.add("admissions", admitted)
        self.stats.admissions.append(
            Admission(
                index=outcome.index,
                prequeue=outcome.prequeue,
                joined_t=outcome.joined_t,
                admitted_t=admitted,
                noticed_t=noticed,
                ticket=claims.get("tkt"),
                issued_at=issued_at,
            )
        )

    # ------------------------------------------------------------------ sampling and progress

    async def _sample_loop(self) -> None:
        while True:
            t = self.now()
            await self._sample_origin(t)
            if self.queue_url is not None:
                await self._sample_queue()
            self.series.peak("origin_inflight", t, self._origin_inflight)
            if self.origin_capacity is not None:
                self.series.set("origin_capacity", t, self.origin_capacity)
            if self.config.mode == "queued":
                self.series.set("admit_rate_target", t, self.scenario.wave.admit_rate)
                waiting = self._queue_waiting if self._queue_waiting is not None else self._waiting
                self.series.set("queue_length", t, waiting)
            self.series.set("active", t, self._active)
            await asyncio.sleep(SAMPLE_EVERY_S)

    async def _sample_origin(self, t: float) -> None:
        """In-flight requests as the origin counts them (its /metrics), or, for an origin
        without them, requests this driver has outstanding."""
        try:
            async with self.session.get(
                self.origin_url + "/metrics", timeout=aiohttp.ClientTimeout(2)
            ) as response:
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError):
            self._origin_inflight = self._client_inflight
            return
        values = _gauges(text, ("gelombang_origin_inflight", "gelombang_origin_capacity"))
        self._origin_inflight = int(values.get("gelombang_origin_inflight", self._client_inflight))
        if "gelombang_origin_capacity" in values:
            self.origin_capacity = int(values["gelombang_origin_capacity"])

    async def _sample_queue(self) -> None:
        if self.config.admin_token:
            await self._sample_queue_counts()
            return
        try:
            async with self.session.get(
                f"{self.queue_url}/api/v1/waves/{self.wave}", timeout=aiohttp.ClientTimeout(2)
            ) as response:
                body = orjson.loads(await response.read()) if response.status == 200 else {}
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
            return
        if isinstance(body, dict) and isinstance(body.get("waiting"), int):
            self._queue_waiting = body["waiting"]

    async def _sample_queue_counts(self) -> None:
        """The wave's counters through the admin API (reads only: lua/read_counts.lua)."""
        try:
            async with self.session.get(
                f"{self.queue_url}/admin/v1/waves/{self.wave}",
                headers={"Authorization": f"Bearer {self.config.admin_token}"},
                timeout=aiohttp.ClientTimeout(2),
            ) as response:
                body = orjson.loads(await response.read()) if response.status == 200 else {}
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
            return
        counts = body.get("counts") if isinstance(body, dict) else None
        if isinstance(counts, dict):
            self._queue_counts.append((self.now(), {k: int(v) for k, v in counts.items()}))
            self._queue_waiting = int(counts.get("waiting", 0)) + int(counts.get("prequeue", 0))

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._print_progress()

    def _print_progress(self) -> None:
        out = self.config.progress
        if out is None:
            return
        line = progress_line(
            self.config.mode,
            self.now(),
            RunTotals.from_run(self.series, self.outcomes),
            waiting=self._waiting,
            origin_inflight=self._origin_inflight,
            origin_capacity=self.origin_capacity,
        )
        print(line, file=out, flush=True)


def _progress_counts(totals: RunTotals) -> str:
    """Arrived, admitted, completed, gave up and still trying: the summary's figures (every
    arrival is in exactly one of completed, gave up and still trying)."""
    gave_up = sum(n for reason, n in totals.gave_up.items() if reason != "run_ended")
    still_trying = totals.arrived - totals.completed - gave_up
    return (
        f"arrived {totals.arrived:,}  admitted {totals.admitted:,}"
        f"  completed {totals.completed:,}  gave up {gave_up:,}  still trying {still_trying:,}"
    )


def _progress_errors(totals: RunTotals) -> str:
    return (
        f"5xx {totals.origin_errors:,}  timeouts {totals.origin_timeouts:,}"
        f"  429 {totals.rate_limited:,}"
    )


def progress_line(
    mode: str,
    t: float,
    totals: RunTotals,
    *,
    waiting: int,
    origin_inflight: int,
    origin_capacity: int | None,
) -> str:
    """One line per second while a run goes on: counts so far, and the origin right now."""
    capacity = "?" if origin_capacity is None else f"{origin_capacity}"
    return (
        f"[{MODE_TITLES[mode]} {t:5.1f}s] {_progress_counts(totals)}  waiting {waiting:,}"
        f" | origin {origin_inflight}/{capacity} in flight  {_progress_errors(totals)}"
    )


def final_progress_line(record: RunRecord, t: float) -> str:
    """The last line, from the closed record: the same numbers the summary shows."""
    capacity = record.meta.origin_capacity
    return (
        f"[{MODE_TITLES[record.meta.mode]} {t:5.1f}s] end: {_progress_counts(record.totals)}"
        f" | origin peak {record.totals.peak_origin_inflight}/{capacity or '?'} in flight"
        f"  {_progress_errors(record.totals)}"
    )


def _error_code(body: dict[str, Any]) -> str | None:
    error = body.get("error")
    return str(error.get("code")) if isinstance(error, dict) else None


def _gauges(text: str, names: tuple[str, ...]) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in names:
            for sample in family.samples:
                values[family.name] = sample.value
    return values


async def run_live(scenario: Scenario, config: DriverConfig) -> LiveResult:
    """One bounded live run of `scenario` in `config.mode`."""
    connector = aiohttp.TCPConnector(limit=config.connection_limit, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        return await LiveRun(scenario, config, session).run()


def with_mode(config: DriverConfig, mode: str) -> DriverConfig:
    return dataclasses.replace(config, mode=mode)


@dataclass(frozen=True)
class OrderCheck:
    """How well admission kept join order after opening (pre-queue tickets excluded)."""

    admitted: int  # post-opening admissions with claims
    tau_b: float | None  # Kendall's tau-b, ticket sequence vs signed admission second
    overtaken_pairs: int  # pairs admitted in a strictly earlier second despite joining later
    prequeue_first: bool  # every pre-queue admission came no later than the first other one


def admission_order(admissions: list[Admission]) -> OrderCheck:
    """Fairness: the queue's ticket sequence (join order) against the admission time it
    signed into each token. Tokens carry whole seconds, so admissions in the same second tie;
    tau-b counts ties, and `overtaken_pairs` counts only real inversions (0 is first come,
    first served)."""
    later = sorted(
        (a for a in admissions if not a.prequeue and a.ticket is not None and a.issued_at),
        key=lambda a: a.ticket or 0,
    )
    tickets = [float(a.ticket or 0) for a in later]
    seconds = [float(a.issued_at or 0) for a in later]
    overtaken = sum(1 for i, si in enumerate(seconds) for sj in seconds[i + 1 :] if sj < si)
    early = [a.issued_at for a in admissions if a.prequeue and a.issued_at]
    prequeue_first = not early or not seconds or max(early) <= min(seconds)
    return OrderCheck(len(later), kendall_tau_b(tickets, seconds), overtaken, prequeue_first)
