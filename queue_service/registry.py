"""Per-process view of the waves: configuration cached from Redis, the latest counts seen by
the admission loop, what the process has learnt about tickets since (who left, pre-queue
ranks), the pace estimate behind every ETA, and the status rate limiters.

The cache never decides anything (Lua does); it spares the hot path a round trip for
configuration, and lets most status polls be answered without one (local_status.py). A change
made through any replica bumps the wave's config version, which the admission loop sees within
one tick and reloads.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from queue_service.clock import Clock, SystemClock
from queue_service.errors import NotFound
from queue_service.pacing import PaceEstimate, PacePrior
from queue_service.ratelimit import RateLimitRules
from queue_service.ratelimit_local import LocalGcra
from queue_service.store import AdmitStep, Store, WaveCounts
from queue_service.waves import WaveConfig, iso_utc, validate_wave_id

log = logging.getLogger(__name__)

NEGATIVE_CACHE_S = 1.0
NEGATIVE_CACHE_SIZE = 1024
MAX_CACHED_RANKS = 2_000_000
"""Pre-queue ranks kept per wave and process (about 100 B each); beyond, ranks come from Redis."""


@dataclass(slots=True)
class StatusLimiters:
    """The per-process status limits of a wave (ratelimit_local.py)."""

    per_ticket: LocalGcra
    per_ip: LocalGcra

    @classmethod
    def from_rules(cls, rules: RateLimitRules) -> StatusLimiters:
        return cls(LocalGcra(rules.status_per_ticket), LocalGcra(rules.status_per_ip))


@dataclass
class WaveRuntime:
    config: WaveConfig
    version: int
    uid: str
    """The wave's random id from its creation; tickets are signed with it."""
    limits: RateLimitRules
    pace: PaceEstimate
    status_limiters: StatusLimiters
    counts: WaveCounts | None = None
    counts_at: float = 0.0
    """When `counts` arrived, on the service's clock (seconds)."""
    cursor: int = 0
    """The highest admission cursor seen (admission steps and status answers): positions
    shown are computed from it, so they never go up within this process."""
    left: set[int] = field(default_factory=set)
    left_read: int = 0
    """How much of the wave's left list this process has read."""
    ranks: dict[int, int] = field(default_factory=dict)
    """Pre-queue seq -> its 0-based place in admission order (fixed once the wave opened)."""
    pace_s: float = field(init=False)
    """Seconds of wait per ticket ahead; recomputed when counts arrive, not on every poll."""
    closes_at_iso: str = field(init=False)
    """The close as every waiting holder is told it, formatted once."""

    def __post_init__(self) -> None:
        self.pace_s = self.pace.seconds_per_place
        self.closes_at_iso = iso_utc(self.config.closes_at)

    @property
    def incarnation(self) -> str:
        return self.counts.incarnation if self.counts else ""

    def observe(self, step: AdmitStep, at: float) -> None:
        """The admission loop's latest step (every tick): counts, pace and what left follow."""
        counts, previous = step.counts, self.counts
        if previous is not None and (
            counts.incarnation != previous.incarnation or counts.left_total < self.left_read
        ):
            # Redis came back with other data: what this process learnt may not hold
            if counts.incarnation != previous.incarnation:
                log.warning(
                    "wave %s: incarnation changed (Redis came back with older data); tickets "
                    "from the lost writes are refused as ticket_lost",
                    self.config.id,
                )
            self.left.clear()
            self.ranks.clear()
            self.left_read = 0
            self.cursor = 0
        self.counts, self.counts_at = counts, at
        self.cursor = max(self.cursor, counts.cursor)
        if step.left and step.left_from == self.left_read:
            self.left.update(step.left)
            self.left_read += len(step.left)
        # skipped = tickets the cursor passed without admitting them: the share of the line
        # that will not need a place, counted where admission is (a leave far back is not)
        self.pace.observe(
            at,
            counts.admitted,
            max(0, counts.cursor - counts.admitted),
            counts.waiting,
            counts.active,
            counts.completed + counts.expired,
            counts.state == "open",
        )
        self.pace_s = self.pace.seconds_per_place

    def remember_rank(self, seq: int, order: int) -> None:
        if len(self.ranks) < MAX_CACHED_RANKS:
            self.ranks[seq] = order

    def service_now_ms(self, now: float) -> int:
        """Service time (wall time minus the outages that do not count toward abandonment),
        extrapolated from the last counts."""
        counts = self.counts
        if counts is None:
            return int(now * 1000)
        return counts.now_ms - counts.down_ms + int((now - self.counts_at) * 1000)


class WaveRegistry:
    def __init__(
        self, store: Store, base_limits: RateLimitRules, clock: Clock | None = None
    ) -> None:
        self._store = store
        self._base_limits = base_limits
        self._clock = clock or SystemClock()
        self._waves: dict[str, WaveRuntime] = {}
        self._missing: OrderedDict[str, float] = OrderedDict()

    @property
    def loaded(self) -> dict[str, WaveRuntime]:
        return self._waves

    def _runtime(self, config: WaveConfig, version: int, uid: str) -> WaveRuntime:
        previous = self._waves.get(config.id)
        limits = config.limits(self._base_limits)
        prior = PacePrior(config.admit_rate, config.max_active, config.session_estimate_s)
        if previous is not None and previous.uid == uid:
            # a reloaded configuration keeps what was observed and learnt so far
            pace = previous.pace
            pace.prior = prior
            limiters = previous.status_limiters
            if previous.limits != limits:
                limiters = StatusLimiters.from_rules(limits)
            runtime = WaveRuntime(
                config, version, uid, limits, pace, limiters, previous.counts,
                previous.counts_at, previous.cursor, previous.left, previous.left_read,
                previous.ranks,
            )  # fmt: skip
        else:
            runtime = WaveRuntime(
                config, version, uid, limits, PaceEstimate(prior), StatusLimiters.from_rules(limits)
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
            raise unknown_wave(wave)
        return await self.reload(wave)

    async def reload(self, wave: str) -> WaveRuntime:
        loaded = await self._store.get_wave(wave)
        if loaded is None:
            self._waves.pop(wave, None)
            self._missing[wave] = time.monotonic()
            while len(self._missing) > NEGATIVE_CACHE_SIZE:
                self._missing.popitem(last=False)
            raise unknown_wave(wave)
        self._missing.pop(wave, None)
        return self._runtime(*loaded)

    def forget(self, wave: str) -> None:
        self._waves.pop(wave, None)

    async def observe(self, wave: str, step: AdmitStep) -> WaveRuntime:
        runtime = self._waves.get(wave)
        if runtime is None or step.counts.cfg_version != runtime.version:
            runtime = await self.reload(wave)
        runtime.observe(step, self._clock.now())
        return runtime


def unknown_wave(wave: str) -> NotFound:
    """The one error for a wave that does not exist (every path that finds none uses it)."""
    return NotFound(f"There is no wave called {wave!r}.", code="unknown_wave")
