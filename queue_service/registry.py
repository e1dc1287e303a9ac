"""Per-process view of the waves: configuration cached from Redis, the latest counts seen by
the admission loop, what the process has learnt about tickets since (who left, pre-queue
ranks), the pace estimate behind every ETA, and the status rate limiters.

The cache never decides anything (Lua does); it spares the hot path a round trip for
configuration, and lets most status polls be answered without one (local_status.py). A change
made through any replica bumps the wave's config version, which the admission loop sees within
one tick and reloads.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from queue_service import metrics
from queue_service.clock import Clock, SystemClock
from queue_service.errors import UnknownWave
from queue_service.pacing import PaceEstimate, PacePrior
from queue_service.ratelimit import RateLimitRules, Rule
from queue_service.ratelimit_local import LocalGcra
from queue_service.store import AdmitStep, HighWater, Store, WaveCounts
from queue_service.waves import WaveConfig, iso_utc, validate_wave_id

log = logging.getLogger(__name__)

NEGATIVE_CACHE_S = 1.0
NEGATIVE_CACHE_SIZE = 1024
KNOWN_IDS_FRESH_S = 2.0
"""The admission loop lists every wave id each second."""
UNLISTED_LOOKUPS = Rule(rate_per_s=20.0, burst=20)
"""While that list is fresh, a wave id not on it is looked up in Redis at most this often per
process (a wave created a moment ago on another replica is found at once); beyond, it is
unknown without a round trip, so a flood of made-up wave ids costs Redis nothing."""
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


class LeftTickets:
    """The tickets this process knows left a wave while waiting, until the admission cursor has
    passed them (then no status answer needs to know: local_status.py sends those to Redis).
    Kept bounded over a long wave: passed ones are dropped as the cursor moves, cheaply (a heap
    by admission order; pre-queue tickets all at once when the cursor leaves the pre-queue)."""

    def __init__(self) -> None:
        self._seqs: set[int] = set()
        self._by_order: list[int] = []
        """Heap of the seqs after the pre-queue (their order is seq - 1)."""
        self._prequeue: set[int] = set()

    def __contains__(self, seq: int) -> bool:
        return seq in self._seqs

    def __len__(self) -> int:
        return len(self._seqs)

    def add(self, seq: int, open_seq: int) -> None:
        if seq in self._seqs:
            return
        self._seqs.add(seq)
        if 0 <= open_seq < seq:
            heapq.heappush(self._by_order, seq)
        else:
            self._prequeue.add(seq)

    def prune(self, cursor: int, open_seq: int) -> None:
        """Forget what the cursor has passed."""
        if open_seq < 0:
            return
        while self._by_order and self._by_order[0] - 1 < cursor:
            self._seqs.discard(heapq.heappop(self._by_order))
        if cursor >= open_seq and self._prequeue:
            self._seqs -= self._prequeue
            self._prequeue.clear()

    def clear(self) -> None:
        self._seqs.clear()
        self._by_order.clear()
        self._prequeue.clear()


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
    left: LeftTickets = field(default_factory=LeftTickets)
    left_read: int = 0
    """How far (an absolute position) this process has read the wave's left list."""
    ranks: dict[int, int] = field(default_factory=dict)
    """Pre-queue seq -> its 0-based place in admission order (fixed once the wave opened);
    emptied once the cursor has passed the whole pre-queue."""
    high_water: HighWater = field(default_factory=HighWater)
    """The highest seq this process has seen the current incarnation issue (steps and joins):
    passed to every script that may notice a rollback (lua/_lib.lua)."""
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

    def learn_issued(self, incarnation: str, seq: int) -> None:
        """A reply showed the wave's incarnation having issued `seq` tickets."""
        if incarnation != self.high_water.incarnation or seq > self.high_water.seq:
            self.high_water = HighWater(incarnation, seq)

    def observe(self, step: AdmitStep, at: float) -> None:
        """The admission loop's latest step (every tick): counts, pace and what left follow."""
        counts, previous = step.counts, self.counts
        if step.began == "rollback":
            metrics.state_rollbacks.labels(self.config.id).inc()
            log.warning(
                "wave %s: Redis holds fewer tickets than this process saw issued (its data was "
                "rolled back in place); a new incarnation began, tickets from the lost writes "
                "are refused as ticket_lost",
                self.config.id,
            )
        if previous is not None and (
            counts.incarnation != previous.incarnation or counts.left_total < self.left_read
        ):
            # Redis came back with other data: what this process learnt may not hold
            if counts.incarnation != previous.incarnation and step.began != "rollback":
                log.warning(
                    "wave %s: incarnation changed (Redis came back with older data); tickets "
                    "from the lost writes are refused as ticket_lost",
                    self.config.id,
                )
            self.left.clear()
            self.ranks.clear()
            self.left_read = 0
            self.cursor = 0
        self.learn_issued(counts.incarnation, counts.seq)
        self.counts, self.counts_at = counts, at
        self.cursor = max(self.cursor, counts.cursor)
        if step.left_from > self.left_read:
            self.left_read = step.left_from  # trimmed meanwhile: the cursor passed those
        if step.left and step.left_from == self.left_read:
            for seq in step.left:
                self.left.add(seq, counts.open_seq)
            self.left_read += len(step.left)
        self.left.prune(self.cursor, counts.open_seq)
        if self.ranks and counts.open_seq >= 0 and self.cursor >= counts.open_seq:
            self.ranks.clear()
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
        self._known_ids: frozenset[str] = frozenset()
        self._known_at: float | None = None
        self._unlisted = LocalGcra(UNLISTED_LOOKUPS)
        self._loading: dict[str, asyncio.Future[WaveRuntime]] = {}
        self._wakeups: set[str] = set()
        store.on_unknown_wave(self.forget)

    def known_ids(self, wave_ids: list[str], at: float) -> None:
        """Every wave id, as the admission loop just listed them (monotonic `at`)."""
        self._known_ids, self._known_at = frozenset(wave_ids), at

    def wake(self, wave: str) -> None:
        """Step `wave` at the admission loop's next tick: it has a new ticket, or a change."""
        self._wakeups.add(wave)

    def take_wakeups(self) -> set[str]:
        woken, self._wakeups = self._wakeups, set()
        return woken

    @property
    def loaded(self) -> dict[str, WaveRuntime]:
        return self._waves

    @property
    def base_limits(self) -> RateLimitRules:
        """The deployment's rate-limit rules (a wave may override them)."""
        return self._base_limits

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
                previous.ranks, previous.high_water,
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
        now = time.monotonic()
        missing_since = self._missing.get(wave)
        if missing_since is not None and now - missing_since < NEGATIVE_CACHE_S:
            raise UnknownWave(wave)
        pending = self._loading.get(wave)
        if pending is not None:  # requests arriving together share one lookup
            return await asyncio.shield(pending)
        listed = self._known_at is not None and now - self._known_at < KNOWN_IDS_FRESH_S
        if listed and wave not in self._known_ids:
            if self._unlisted.retry_after("unlisted", now):
                raise UnknownWave(wave)
            self._unlisted.charge("unlisted", now)
        lookup = asyncio.ensure_future(self.reload(wave))
        self._loading[wave] = lookup
        try:
            return await asyncio.shield(lookup)
        finally:
            if self._loading.get(wave) is lookup:
                del self._loading[wave]

    async def reload(self, wave: str) -> WaveRuntime:
        loaded = await self._store.get_wave(wave)
        if loaded is None:
            self._waves.pop(wave, None)
            self._missing[wave] = time.monotonic()
            while len(self._missing) > NEGATIVE_CACHE_SIZE:
                self._missing.popitem(last=False)
            raise UnknownWave(wave)
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
