"""A live run: the scenario's arrivals as registrants (`LiveRegistrant`), each its own asyncio
task, bounded in count and time, and the run record when it ends.

One task per registrant and one shared `aiohttp.ClientSession`, so one process holds
thousands of registrants at once (they spend nearly all their time asleep between polls).
Every run is bounded: at most `max_registrants` arrivals and `max_seconds` of wall time, after
which every registrant still running is cancelled and recorded as `run_ended`. With an admin
token a queued run first creates or reconfigures its wave from the scenario
(`simulator.wave_definition`) to open `clock.opens_at_s` after the run starts. A queued run of
a scenario with call-backs runs its own SMS/WhatsApp gateway on 127.0.0.1
(`simulator.driver.gateway`), which the wave's `notify.webhook_url` points at.

Times in the record are seconds since the start of the run (t = 0).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from queue_service.contacts import load_or_create_key
from simulator.driver.config import DriverConfig, gateway_secret, require_loopback
from simulator.driver.gateway import Gateway
from simulator.driver.progress import final_progress_line
from simulator.driver.registrant import Crowd, DriverStats, LiveRegistrant
from simulator.driver.samplers import CursorTrace, LiveCounts, Samplers
from simulator.journey import JourneySettings
from simulator.records import RegistrantOutcome, RunMeta, RunRecord, TimeSeries
from simulator.scenario import Scenario
from simulator.wave_admin import WaveAdmin
from simulator.wave_definition import EXAMPLE_GATEWAY, wave_definition

STOP_GRACE_S = 5.0
"""How long cancelled registrants get to unwind at the end of a run."""


@dataclass
class LiveResult:
    record: RunRecord
    stats: DriverStats


class LiveRun:
    def __init__(
        self, scenario: Scenario, config: DriverConfig, session: aiohttp.ClientSession
    ) -> None:
        self.scenario = scenario
        self.config = config
        self.session = session
        self.seed = scenario.seed if config.seed is None else config.seed
        self.population = scenario.population(self.seed)
        self.wave = config.wave or scenario.wave.id
        self.origin_url = require_loopback(config.origin_url, "--origin-url")
        self.queue_url = (
            require_loopback(config.queue_url, "--queue-url") if config.queue_url else None
        )
        self.admin = (
            WaveAdmin(session, self.queue_url, config.admin_token)
            if self.queue_url and config.admin_token
            else None
        )
        self.duration_s = min(config.max_seconds, scenario.clock.duration_s)
        self.series = TimeSeries.empty(self.duration_s)
        self.outcomes: list[RegistrantOutcome] = []
        self.stats = DriverStats()
        self.counts = LiveCounts()
        self.cursor = CursorTrace()
        self._t0 = time.monotonic()
        self._t0_wall = time.time()
        self._tasks: set[asyncio.Task[None]] = set()
        self.gateway: Gateway | None = None
        secret = gateway_secret(config, scenario.callbacks.enabled)
        if secret is not None:
            self.gateway = Gateway(load_or_create_key(secret, Path(), "webhook secret"))

    def now(self) -> float:
        return time.monotonic() - self._t0

    def definition(self, started_wall: float) -> dict[str, object]:
        """The wave this run drives: it opens `clock.opens_at_s` and closes
        `clock.closes_at_s` after the run starts at `started_wall` (Unix seconds)."""
        clock = self.scenario.clock
        return wave_definition(
            self.scenario,
            opens_at=started_wall + clock.opens_at_s,
            closes_at=started_wall + clock.closes_at_s,
            origin_url=self.origin_url + "/",
            webhook_url=self.gateway.url if self.gateway else EXAMPLE_GATEWAY,
            **self.config.wave_changes,
        )

    async def configure_wave(self, started_wall: float) -> None:
        """(Re)create the wave from the scenario, to open relative to `started_wall`."""
        assert self.admin is not None
        await self.admin.put(self.wave, self.definition(started_wall))

    # ------------------------------------------------------------------ the run

    async def run(self) -> LiveResult:
        if self.gateway is not None:
            await self.gateway.start()
        try:
            return await self._run()
        finally:
            if self.gateway is not None:
                await self.gateway.stop()

    async def _run(self) -> LiveResult:
        started_wall = time.time()
        self._t0, self._t0_wall = time.monotonic(), started_wall
        if self.config.queued and self.admin is not None:
            await self.configure_wave(started_wall)
        samplers = Samplers(
            self.session,
            mode=self.config.mode,
            origin_url=self.origin_url,
            queue_url=self.queue_url,
            wave=self.wave,
            admin=self.admin,
            admit_rate=self.scenario.wave.admit_rate,
            series=self.series,
            counts=self.counts,
            clock=self.now,
        )
        background = [asyncio.create_task(samplers.sample_loop())]
        progress = None
        if self.config.progress is not None:
            progress = asyncio.create_task(
                samplers.progress_loop(self.config.progress, self.outcomes)
            )
            background.append(progress)
        try:
            async with asyncio.timeout(self.duration_s):
                await self._spawn_arrivals(self._crowd())
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
        except TimeoutError:
            pass
        finally:
            # No progress line while registrants are being stopped: the next one is the last.
            if progress is not None:
                progress.cancel()
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_S)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        return self._result(started_wall, samplers)

    def _crowd(self) -> Crowd:
        settings = JourneySettings.of(
            self.scenario,
            queued=self.config.queued,
            wave=self.wave,
            opens_at_s=self.scenario.clock.opens_at_s,
            callbacks=self.gateway is not None,
        )
        return Crowd(
            session=self.session,
            settings=settings,
            mode=self.config.mode,
            seed=self.seed,
            queue_url=self.queue_url,
            origin_url=self.origin_url,
            origin_timeout_s=self.scenario.origin.timeout_s,
            series=self.series,
            counts=self.counts,
            cursor=self.cursor,
            stats=self.stats,
            clock=self.now,
            t0_wall=self._t0_wall,
            gateway=self.gateway,
        )

    async def _spawn_arrivals(self, crowd: Crowd) -> None:
        # Each person arrives once: the Poisson draw may exceed the population by a little.
        limit = min(self.config.max_registrants, len(self.population))
        times = self.scenario.arrival_process().times(self.seed, limit=limit)
        for index, t in enumerate(times):
            if t >= self.duration_s:
                break
            delay = t - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            registrant = self.population[index]
            outcome = RegistrantOutcome(index=index, is_bot=registrant.is_bot, arrival_t=self.now())
            self.outcomes.append(outcome)
            self.series.add("arrivals", outcome.arrival_t)
            task = asyncio.create_task(LiveRegistrant(crowd, registrant, outcome).run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self.stats.peak_live_registrants = max(
                self.stats.peak_live_registrants, len(self._tasks)
            )

    def _result(self, started_wall: float, samplers: Samplers) -> LiveResult:
        end = self.now()
        for outcome in self.outcomes:
            if outcome.completed_t is None and outcome.gave_up_t is None:
                outcome.gave_up_t, outcome.gave_up_reason = end, "run_ended"
        self.cursor.fill(self.outcomes)
        queue_side = samplers.queue_series()
        self.stats.wall_s = end
        queued, wave = self.config.queued, self.scenario.wave
        meta = RunMeta(
            mode=self.config.mode,
            scenario=self.scenario.name,
            seed=self.seed,
            source="live",
            population=len(self.outcomes),
            duration_s=self.duration_s,
            opens_at_s=self.scenario.clock.opens_at_s,
            prequeue_s=wave.prequeue_s,
            admit_rate=wave.admit_rate if queued else None,
            admit_burst=wave.burst if queued else None,
            max_active=wave.max_active if queued else None,
            session_ttl_s=wave.session_ttl_s if queued else None,
            abandon_after_s=wave.abandon_after_s if queued else None,
            origin_capacity=self.counts.origin_capacity,
            quota=wave.quota or None,
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
        if self.gateway is not None:
            meta.notes.append(
                f"call-backs: the driver's gateway took {self.gateway.delivered} messages "
                f"({self.gateway.stray} to nobody listed, {self.gateway.forged} forged); people "
                "who chose e-mail or Web Push opted in by SMS"
            )
        # The last line comes from the closed record, the numbers the summary shows.
        if self.config.progress is not None:
            print(final_progress_line(record, end), file=self.config.progress, flush=True)
        return LiveResult(record, self.stats)


async def run_live(scenario: Scenario, config: DriverConfig) -> LiveResult:
    """One bounded live run of `scenario` in `config.mode`."""
    connector = aiohttp.TCPConnector(limit=config.connection_limit, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        return await LiveRun(scenario, config, session).run()
