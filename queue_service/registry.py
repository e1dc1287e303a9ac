"""Per-process view of the waves: configuration cached from Redis, the latest counts seen by
the admission loop, and the throughput estimate behind every ETA.

The cache never decides anything (Lua does); it only spares the hot path a round trip for
configuration. A change made through any replica bumps the wave's config version, which the
admission loop sees within one tick and reloads.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from queue_service.errors import NotFound
from queue_service.ratelimit import RateLimitRules
from queue_service.store import Store, WaveCounts
from queue_service.waves import WaveConfig, validate_wave_id

log = logging.getLogger(__name__)

NEGATIVE_CACHE_S = 1.0
NEGATIVE_CACHE_SIZE = 1024
EWMA_HALF_LIFE_S = 20.0
MIN_POLL_MS = 1000
MAX_POLL_MS = 30000


@dataclass
class Throughput:
    """EWMA of admissions/s and of the share of tickets skipped as abandoned or left."""

    admitted_per_s: float = 0.0
    skip_fraction: float = 0.0
    _last: WaveCounts | None = None
    _last_at: float = 0.0

    def observe(self, counts: WaveCounts, at: float) -> None:
        last, self._last, last_at, self._last_at = self._last, counts, self._last_at, at
        if last is None or at <= last_at:
            return
        dt = at - last_at
        weight = 1 - 0.5 ** (dt / EWMA_HALF_LIFE_S)
        admitted = max(0, counts.admitted - last.admitted)
        skipped = max(0, counts.abandoned - last.abandoned)
        self.admitted_per_s += weight * (admitted / dt - self.admitted_per_s)
        if admitted + skipped:
            self.skip_fraction += weight * (skipped / (admitted + skipped) - self.skip_fraction)


@dataclass
class WaveRuntime:
    config: WaveConfig
    version: int
    limits: RateLimitRules
    counts: WaveCounts | None = None
    throughput: Throughput = field(default_factory=Throughput)
    pace_s: float = field(init=False)
    """Seconds of wait per ticket ahead; recomputed when counts arrive (`observe`), not on
    every status poll that reads it."""
    longest_poll_ms: int = field(init=False)
    """Never poll more rarely than this: a polite client must not look like it abandoned."""

    def __post_init__(self) -> None:
        self.pace_s = self.seconds_per_place()
        self.longest_poll_ms = int(
            min(MAX_POLL_MS, max(MIN_POLL_MS, self.config.abandon_after_s * 1000 / 3))
        )

    def observe(self, counts: WaveCounts, at: float) -> None:
        """The admission loop's latest counts (every tick): throughput and pace follow."""
        self.counts = counts
        self.throughput.observe(counts, at)
        self.pace_s = self.seconds_per_place()

    def seconds_per_place(self) -> float:
        """Expected seconds of wait per ticket ahead."""
        config, counts = self.config, self.counts
        rate = config.admit_rate
        saturated = (
            counts is not None
            and config.max_active > 0
            and counts.active >= 0.95 * config.max_active
        )
        if saturated and self.throughput.admitted_per_s > 0:
            # max_active, not admit_rate, sets the pace: sessions must end to admit more.
            rate = min(rate, self.throughput.admitted_per_s)
        return max(0.0, 1.0 - self.throughput.skip_fraction) / max(rate, 1e-6)

    def eta_s(self, ahead: int) -> int:
        return round(ahead * self.pace_s) if ahead > 0 else 0

    def poll_after_ms(self, ahead: int, now: float) -> int:
        """Poll at about a tenth of the remaining wait: people far back ask rarely, so polling
        load stays bounded however long the queue is."""
        if ahead < 0:  # pre-queue: check back before opening
            until_open_ms = (self.config.opens_at - now) * 1000
            return int(min(self.longest_poll_ms, max(MIN_POLL_MS * 2, until_open_ms / 4)))
        return min(self.longest_poll_ms, max(MIN_POLL_MS, self.eta_s(ahead) * 100))


class WaveRegistry:
    def __init__(self, store: Store, base_limits: RateLimitRules) -> None:
        self._store = store
        self._base_limits = base_limits
        self._waves: dict[str, WaveRuntime] = {}
        self._missing: OrderedDict[str, float] = OrderedDict()

    @property
    def loaded(self) -> dict[str, WaveRuntime]:
        return self._waves

    def _runtime(self, config: WaveConfig, version: int) -> WaveRuntime:
        previous = self._waves.get(config.id)
        # a reloaded configuration keeps what was observed so far
        counts, throughput = (previous.counts, previous.throughput) if previous else (None, None)
        runtime = WaveRuntime(
            config,
            version,
            config.limits(self._base_limits),
            counts,
            throughput or Throughput(),
        )
        self._waves[config.id] = runtime
        return runtime

    async def get(self, wave: str) -> WaveRuntime:
        runtime = self._waves.get(wave)
        if runtime is not None:
            return runtime
        validate_wave_id(wave)
        missing_since = self._missing.get(wave)
        if missing_since is not None and time.monotonic() - missing_since < NEGATIVE_CACHE_S:
            raise NotFound(f"There is no wave called {wave!r}.", code="unknown_wave")
        return await self.reload(wave)

    async def reload(self, wave: str) -> WaveRuntime:
        loaded = await self._store.get_wave(wave)
        if loaded is None:
            self._waves.pop(wave, None)
            self._missing[wave] = time.monotonic()
            while len(self._missing) > NEGATIVE_CACHE_SIZE:
                self._missing.popitem(last=False)
            raise NotFound(f"There is no wave called {wave!r}.", code="unknown_wave")
        self._missing.pop(wave, None)
        return self._runtime(*loaded)

    def forget(self, wave: str) -> None:
        self._waves.pop(wave, None)

    async def observe(self, wave: str, counts: WaveCounts) -> WaveRuntime:
        runtime = self._waves.get(wave)
        if runtime is None or counts.cfg_version != runtime.version:
            runtime = await self.reload(wave)
        runtime.observe(counts, time.monotonic())
        return runtime
