"""The admission loop. Every service process runs it for every wave: there is no leader that
could die and stall a wave. Each step calls the `admit` script, which decides atomically in
Redis how many tickets to admit now (token bucket, max_active, quota), so ten processes admit
exactly as much as one.

A wave is stepped as often as it needs (`cadence_s`): every `admission_interval_s` while anyone
waits in it (admission, and the counts that let status polls be answered without Redis, must be
fresh); every `IDLE_INTERVAL_S` while nobody waits (nothing to admit: only sessions to expire
and counts to refresh); every `FINISHED_INTERVAL_S` once it is closed or full. A join that gives
a new ticket, and an operator's change, wake the wave at once in the process that handled it
(`WaveRegistry.wake`); other processes notice at their next idle step. So a deployment with a
wave per province and every past wave pays for the ones people are in, not for the others.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from queue_service import ledger, metrics
from queue_service.callbacks import NOTIFY_INTERVAL_S, Callbacks
from queue_service.carry_over import CarryOver, LeaseLost
from queue_service.errors import ApiError, UnknownWave
from queue_service.prequeue_draw import draw_prequeue
from queue_service.registry import WaveRegistry
from queue_service.store import AdmitStep, HighWater, Store

log = logging.getLogger(__name__)

WAVE_LIST_REFRESH_S = 1.0
IDLE_INTERVAL_S = 5.0
"""How often a wave nobody waits in is stepped (its sessions expire, its counts refresh; the
first joiner wakes it in the process that took the join, and is admitted at once)."""
FINISHED_INTERVAL_S = 30.0
"""How often a closed or full wave is stepped (sessions still expire; nobody is admitted)."""
FINISHED_STATES = frozenset({"closed", "full"})


OUTAGE_GAP_STEPS = 20
"""A pause of this many admission intervals between two steps of a wave (and at least
MIN_OUTAGE_GAP_MS) while anyone waits means no process reached Redis: it does not count
toward abandonment."""
MIN_OUTAGE_GAP_MS = 1000


SEAL_INTERVAL_S = 1.0
"""How often a process stores the chain of a growing ledger (public proof)."""

LOCAL_STATUS_AGE_STEPS = 20
"""A process answers status from its copy of a wave only while the copy is at most this many
admission intervals old (and at least 1 s): older means it is not reaching Redis."""


def outage_gap_ms(interval_s: float) -> int:
    return max(MIN_OUTAGE_GAP_MS, int(interval_s * 1000 * OUTAGE_GAP_STEPS))


def local_status_max_age_s(interval_s: float) -> float:
    return max(1.0, interval_s * LOCAL_STATUS_AGE_STEPS)


def cadence_s(step: AdmitStep, interval_s: float) -> float:
    """How long until a wave's next step, from what its last step saw."""
    counts = step.counts
    if counts.state in FINISHED_STATES:
        return FINISHED_INTERVAL_S
    if counts.seq > counts.cursor:  # somebody waits (in the pre-queue too)
        return interval_s
    return max(interval_s, IDLE_INTERVAL_S)


class AdmissionLoop:
    def __init__(
        self,
        store: Store,
        registry: WaveRegistry,
        interval_s: float,
        callbacks: Callbacks | None = None,
        carry: CarryOver | None = None,
    ) -> None:
        self._callbacks = callbacks
        self._carry = carry
        self._notified: dict[str, float] = {}
        """Wave -> when (monotonic) this process last ran its notify step (call-backs)."""
        self._store = store
        self._registry = registry
        self._interval_s = interval_s
        self._outage_gap_ms = outage_gap_ms(interval_s)
        self._wave_ids: list[str] = []
        self._listed_at = 0.0
        self._due: dict[str, float] = {}
        """Wave -> when (monotonic) it is next stepped; absent = now."""
        self._failing = False
        self._sealed: dict[str, tuple[int, float]] = {}
        """Wave -> (entries of its ledger this process saw sealed, when)."""

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.tick()
                if self._failing:
                    log.info("admission loop recovered: Redis reachable again")
                self._failing = False
            except ApiError as exc:  # StoreUnavailable: keep going, Redis may come back
                if not self._failing:
                    log.warning("admission loop paused: %s", exc.message)
                self._failing = True
            except Exception:
                log.exception("admission loop step failed")
            spent = time.monotonic() - started
            metrics.admission_tick_seconds.observe(spent)
            # jitter so that processes started together do not call Redis in lockstep
            delay = self._interval_s * random.uniform(0.8, 1.2) - spent
            await asyncio.sleep(max(0.0, delay))

    async def tick(self) -> None:
        now = time.monotonic()
        if now - self._listed_at > WAVE_LIST_REFRESH_S:
            self._wave_ids = await self._store.wave_ids()
            self._registry.known_ids(self._wave_ids, now)
            self._listed_at = now
        for wave in self._registry.take_wakeups():
            self._due.pop(wave, None)
        due = [wave for wave in self._wave_ids if self._due.get(wave, 0.0) <= now]
        await asyncio.gather(*(self._step(wave) for wave in due))

    async def _step(self, wave: str) -> None:
        try:
            step = await step_wave(self._store, self._registry, wave, self._outage_gap_ms)
        except UnknownWave:  # deleted: the registry has forgotten it (store.on_unknown_wave)
            self._due.pop(wave, None)
            return
        except ApiError:
            self._due.pop(wave, None)  # retried at the next tick
            raise
        wait = cadence_s(step, self._interval_s) * random.uniform(0.8, 1.2)
        self._due[wave] = time.monotonic() + wait
        await self._seal_ledger(wave, step)
        await self._notify(wave)
        await self._carry_over(wave, step)

    async def _carry_over(self, wave: str, step: AdmitStep) -> None:
        """Call-backs: a wave with carry_over_to that has ended moves its verified holders."""
        runtime = self._registry.loaded.get(wave)
        if self._carry is None or runtime is None or step.counts.state not in FINISHED_STATES:
            return
        try:
            await self._carry.run_if_due(runtime)
        except LeaseLost:
            log.info("wave %s: another process took the carry-over over", wave)

    async def _notify(self, wave: str) -> None:
        """Call-backs: tell the holders whose turn is near, about once a second per wave."""
        runtime = self._registry.loaded.get(wave)
        if self._callbacks is None or runtime is None or not runtime.config.notify.enabled:
            return
        now = time.monotonic()
        if now - self._notified.get(wave, 0.0) < NOTIFY_INTERVAL_S:
            return
        self._notified[wave] = now + random.uniform(0, 0.2 * NOTIFY_INTERVAL_S)
        await self._callbacks.notify_step(runtime)

    async def _seal_ledger(self, wave: str, step: AdmitStep) -> None:
        """Public proof: store the ledger's hash chain about every SEAL_INTERVAL_S while it
        grows, so an entry changed in Redis later breaks what the service serves."""
        sealed_count, sealed_at = self._sealed.get(wave, (0, 0.0))
        now = time.monotonic()
        if step.counts.ledger_length > sealed_count and now - sealed_at >= SEAL_INTERVAL_S:
            jitter = random.uniform(0, 0.2 * SEAL_INTERVAL_S)
            try:
                head = await ledger.seal(self._store, wave)
            except Exception as exc:  # admission goes on; sealing is tried again later
                log.warning("wave %s: sealing the ledger failed: %s", wave, exc)
                self._sealed[wave] = (sealed_count, now + jitter)
                return
            self._sealed[wave] = (head.count, now + jitter)


async def step_wave(
    store: Store, registry: WaveRegistry, wave: str, outage_gap: int = MIN_OUTAGE_GAP_MS
) -> AdmitStep:
    """One admission step of `wave`, told what this process knows (how far it has read the
    left list, the highest ticket it has seen issued), and recorded."""
    runtime = registry.loaded.get(wave)
    step = await store.admit(
        wave,
        left_from=runtime.left_read if runtime else 0,
        outage_gap_ms=outage_gap,
        known=runtime.high_water if runtime else HighWater(),
    )
    await record_step(registry, wave, step)
    counts = step.counts
    if counts.open_seq >= 0 and not counts.drawn:
        # the opening: the pre-queue is drawn (public proof), then admitted from at once
        drawn = await draw_prequeue(store, wave)
        if drawn and counts.seq > counts.cursor:  # held back for the draw: admit now
            return await step_wave(store, registry, wave, outage_gap)
    return step


async def record_step(registry: WaveRegistry, wave: str, step: AdmitStep) -> None:
    """Feed one admission step to the registry (counts, ETA) and to the metrics. Every caller of
    the admit script records through here, so what it decided is counted exactly once."""
    runtime = await registry.observe(wave, step)
    series = metrics.wave_series(wave)
    counts, config = step.counts, runtime.config
    series.waiting.set(counts.waiting)
    series.prequeue.set(counts.prequeue)
    series.active.set(counts.active)
    series.admitted.set(counts.admitted)
    series.max_active.set(config.max_active)
    series.admit_rate.set(config.admit_rate)
    series.quota.set(config.quota)
    for state, gauge in series.states.items():
        gauge.set(1 if state == counts.state else 0)
    if step.abandoned_now:
        series.abandoned.inc(step.abandoned_now)
    if step.expired_now:
        series.expired.inc(step.expired_now)
    if config.notify.enabled:
        calls = metrics.callback_series(wave)
        calls.outbox.set(counts.outbox)
        calls.called.set(counts.called)
        called, returned, not_returned = step.callbacks
        if called:
            calls.calls.inc(called)
        if returned:
            calls.returned.inc(returned)
        if not_returned:
            calls.not_returned.inc(not_returned)
    if not step.admitted:
        return
    series.admissions.inc(len(step.admitted))
    opened_ms = config.opens_at * 1000
    for admitted in step.admitted:
        wait_s = max(0.0, (counts.now_ms - admitted.joined_ms) / 1000)
        series.wait.observe(wait_s)
        if admitted.joined_ms >= opened_ms:  # pre-queue joiners had no ETA to keep
            series.eta_error.observe(wait_s - admitted.eta_at_join_s)
