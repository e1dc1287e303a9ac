"""The admission loop. Every service process runs it for every wave: there is no leader that
could die and stall a wave. Each tick calls the `admit` script, which decides atomically in
Redis how many tickets to admit now (token bucket, max_active, quota), so ten processes admit
exactly as much as one."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from queue_service import metrics
from queue_service.errors import ApiError
from queue_service.registry import WaveRegistry
from queue_service.store import AdmitStep, Store, UnknownWave

log = logging.getLogger(__name__)

WAVE_LIST_REFRESH_S = 1.0


OUTAGE_GAP_STEPS = 20
"""A pause of this many admission intervals between two steps of a wave (and at least
MIN_OUTAGE_GAP_MS) means no process reached Redis: it does not count toward abandonment."""
MIN_OUTAGE_GAP_MS = 1000


LOCAL_STATUS_AGE_STEPS = 20
"""A process answers status from its copy of a wave only while the copy is at most this many
admission intervals old (and at least 1 s): older means it is not reaching Redis."""


def outage_gap_ms(interval_s: float) -> int:
    return max(MIN_OUTAGE_GAP_MS, int(interval_s * 1000 * OUTAGE_GAP_STEPS))


def local_status_max_age_s(interval_s: float) -> float:
    return max(1.0, interval_s * LOCAL_STATUS_AGE_STEPS)


class AdmissionLoop:
    def __init__(self, store: Store, registry: WaveRegistry, interval_s: float) -> None:
        self._store = store
        self._registry = registry
        self._interval_s = interval_s
        self._outage_gap_ms = outage_gap_ms(interval_s)
        self._wave_ids: list[str] = []
        self._listed_at = 0.0
        self._failing = False

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
            # jitter so that processes started together do not call Redis in lockstep
            delay = self._interval_s * random.uniform(0.8, 1.2) - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, delay))

    async def tick(self) -> None:
        now = time.monotonic()
        if now - self._listed_at > WAVE_LIST_REFRESH_S:
            self._wave_ids = await self._store.wave_ids()
            self._listed_at = now
        await asyncio.gather(*(self._step(wave) for wave in self._wave_ids))

    async def _step(self, wave: str) -> None:
        runtime = self._registry.loaded.get(wave)
        try:
            step = await self._store.admit(
                wave,
                left_from=runtime.left_read if runtime else 0,
                outage_gap_ms=self._outage_gap_ms,
            )
        except UnknownWave:
            self._registry.forget(wave)
            return
        await record_step(self._registry, wave, step)


_initialised_waves: set[str] = set()


async def record_step(registry: WaveRegistry, wave: str, step: AdmitStep) -> None:
    """Feed one admission step to the registry (counts, ETA) and to the metrics. Every caller of
    the admit script records through here, so what it decided is counted exactly once."""
    runtime = await registry.observe(wave, step)
    if wave not in _initialised_waves:
        metrics.init_wave_series(wave)
        _initialised_waves.add(wave)
    counts, config = step.counts, runtime.config
    metrics.queue_waiting.labels(wave).set(counts.waiting)
    metrics.queue_prequeue.labels(wave).set(counts.prequeue)
    metrics.sessions_active.labels(wave).set(counts.active)
    metrics.wave_admitted.labels(wave).set(counts.admitted)
    metrics.wave_max_active.labels(wave).set(config.max_active)
    metrics.wave_admit_rate.labels(wave).set(config.admit_rate)
    metrics.wave_quota.labels(wave).set(config.quota)
    for state in metrics.WAVE_STATES:
        metrics.wave_state.labels(wave, state).set(1 if state == counts.state else 0)
    if step.abandoned_now:
        metrics.abandoned.labels(wave).inc(step.abandoned_now)
    if step.expired_now:
        metrics.sessions_expired.labels(wave).inc(step.expired_now)
    if not step.admitted:
        return
    metrics.admissions.labels(wave).inc(len(step.admitted))
    opened_ms = config.opens_at * 1000
    for admitted in step.admitted:
        wait_s = max(0.0, (counts.now_ms - admitted.joined_ms) / 1000)
        metrics.wait_seconds.labels(wave).observe(wait_s)
        if admitted.joined_ms >= opened_ms:  # pre-queue joiners had no ETA to keep
            metrics.eta_error_seconds.labels(wave).observe(wait_s - admitted.eta_at_join_s)
