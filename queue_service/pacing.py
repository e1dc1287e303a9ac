"""How fast a wave moves, and what each ticket holder is told because of it: the estimated
wait, when to poll again, and the deadline by which a holder who stays must have polled.

Pure functions and one small estimator, no I/O and no clock of their own: the service calls
them with the admission loop's counts, and the offline model and the planner import the very
same code (one policy, two clocks). The estimate shown never jumps by orders of magnitude on
noise: it moves at most a factor of two a minute (ETA_DOUBLING_S), and while max_active binds
it follows Little's law with a slot hold learnt over several holds, not the admissions of the
last few seconds (which come in clumps when sessions end together).

Polling load grows with the log of the queue length: a holder polls again after about a
twentieth of their expected wait (at least every second near the front, at most every
`MAX_POLL_MS` far back). With N waiting at r admissions/s the total is about
20 r (1 + ln(N / 20 r)) polls/s below the cap, plus N / cap beyond it: 5 million waiting at
17/s cost about 7,900 polls/s (`total_poll_rate`, checked by tests and the planner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from queue_service import admission_policy

MIN_POLL_MS = 1_000
MAX_POLL_MS = 15 * 60 * 1_000
POLL_SHARE = 0.05
"""Poll again after this share of the expected wait. A twentieth keeps a holder who is admitted
sooner than predicted (the rate was raised, many ahead gave up) from arriving late by more
than 5% of their wait, and still costs O(log N) polls."""
EWMA_HALF_LIFE_S = 20.0
"""Memory of the measured pace: what happened 20 s ago counts half as much as now."""
EVIDENCE_HALF_LIFE_S = 10.0
"""How fast measured throughput takes over from the configuration's prior."""
MIN_ENDED_FOR_HOLD = 20
"""Sessions that must have ended before their measured length replaces expected_session_s."""
HOLD_MEMORY_HOLDS = 2.0
"""The slot hold is learnt over about this many holds (a half-life of twice the hold): sessions
end in clumps when many were admitted together (at opening, on resume, when slots are full and
sessions are never used), and a memory shorter than a hold swings between clumps."""
SLOTS_BIND_S = 1.0
"""max_active binds when fewer slots are free than a second of admit_rate would fill."""
ETA_DOUBLING_S = 60.0
"""The estimate shown moves at most by a factor of two per minute (up or down), so noise in
what is measured never makes an ETA jump by orders of magnitude between two polls; a change
of the wave's configuration counts at once."""


@dataclass(frozen=True, slots=True)
class PacePrior:
    """What the wave's configuration says about its pace before anything is measured."""

    admit_rate: float
    max_active: int
    expected_session_s: float

    def admissions_per_s(self, hold_s: float | None = None) -> float:
        """Admissions per second the configuration allows with a standing backlog: the
        token bucket's rate, or fewer when max_active binds (a slot is reused only after its
        session ends, `hold_s` on average: expected_session_s until measured)."""
        rate = self.admit_rate
        hold = self.expected_session_s if hold_s is None else hold_s
        if self.max_active > 0 and hold > 0:
            rate = min(rate, self.max_active / hold)
        return max(rate, 1e-6)

    def slots_bind(self, active: int) -> bool:
        return self.max_active > 0 and self.max_active - active < max(
            1.0, self.admit_rate * SLOTS_BIND_S
        )


@dataclass(slots=True)
class _Decaying:
    """A sum that decays with time: ratios of two of them are EWMAs without the start-up bias
    of one that starts at 0."""

    value: float = 0.0

    def add(self, amount: float, decay: float) -> None:
        self.value = self.value * decay + amount


@dataclass(slots=True)
class PaceEstimate:
    """Admissions per second and the share of tickets skipped (abandoned or left), learned
    from consecutive admission-loop counts, and the wait per place shown from them.

    Two limits, each learnt where it is the one that binds:
    - the token bucket: throughput measured while a backlog waited, admission could run (the
      wave open, not paused, not full) and slots were free, blended with admit_rate until
      there is enough evidence, never above admit_rate (an empty line, a paused wave or full
      slots say nothing about it);
    - max_active (Little's law): max_active / the mean slot hold. The hold is learnt from the
      sessions that ended (active slot-seconds / sessions ended, over about two holds) once
      MIN_ENDED_FOR_HOLD have, expected_session_s until then, taken when sessions end (not
      in between), and it is at least as long as the slots have now been full with no
      session ending. Measuring admissions over seconds
      while slots bind would swing from nothing (between clumps of sessions ending) to a
      burst (when a clump ends).
    Every average is a ratio of decaying sums (counts over time), so none starts at 0. What is
    shown (`seconds_per_place`) follows that estimate at most a factor of two per minute.
    """

    prior: PacePrior
    evidence_s: float = 0.0
    """Seconds of backlog observed while admitting with slots free (not decayed)."""
    _admitted: _Decaying = field(default_factory=_Decaying)
    _backlog_s: _Decaying = field(default_factory=_Decaying)
    _skipped: _Decaying = field(default_factory=_Decaying)
    _reached: _Decaying = field(default_factory=_Decaying)
    _active_s: _Decaying = field(default_factory=_Decaying)
    """Slot-seconds in use, for the hold time."""
    _ended: _Decaying = field(default_factory=_Decaying)
    _ended_total: int = 0
    _hold_s: float | None = None
    """The measured hold as of the last sessions that ended: between endings it stands (a
    ratio taken then would only drift with time since the last clump)."""
    _full_since: float | None = None
    """Since when every slot has been taken with no session ending (None: not so now)."""
    _last: tuple[float, int, int, int, int, int] | None = None
    """(at, admitted, skipped, waiting, active, ended) of the previous observation."""
    _shown: float | None = None
    _shown_for: PacePrior | None = None
    """The configuration the shown value was damped under: a change starts afresh."""

    def observe(
        self,
        at: float,
        admitted: int,
        skipped: int,
        waiting: int,
        active: int = 0,
        ended: int = 0,
        admitting: bool = True,
    ) -> None:
        """One admission-loop count: cumulative admitted, skipped (abandoned + left) and ended
        (completed + expired) tickets, tickets waiting and slots active now, and whether
        admission could run (the wave open)."""
        last, self._last = self._last, (at, admitted, skipped, waiting, active, ended)
        if last is None or at <= last[0]:
            self._damp(0.0)
            return
        dt = at - last[0]
        decay = math.pow(0.5, dt / EWMA_HALF_LIFE_S)
        new_admitted = max(0, admitted - last[1])
        new_skipped = max(0, skipped - last[2])
        new_ended = max(0, ended - last[5])
        hold_memory_s = max(EWMA_HALF_LIFE_S, HOLD_MEMORY_HOLDS * self._hold_or_prior_s())
        hold_decay = math.pow(0.5, dt / hold_memory_s)
        self._active_s.add(0.5 * (active + last[4]) * dt, hold_decay)
        self._ended.add(new_ended, hold_decay)
        self._ended_total += new_ended
        if new_ended and self._ended_total >= MIN_ENDED_FOR_HOLD and self._ended.value > 0:
            self._hold_s = self._active_s.value / self._ended.value
        if not self.prior.slots_bind(active):
            self._full_since = None
        elif new_ended or self._full_since is None:
            self._full_since = at
        if admitting:
            if last[3] > 0 and not self.prior.slots_bind(last[4]):
                # a backlog waited and slots were free: what was admitted is the bucket's pace
                self._admitted.add(new_admitted, decay)
                self._backlog_s.add(dt, decay)
                self.evidence_s += dt
            if new_admitted + new_skipped:
                self._skipped.add(new_skipped, decay)
                self._reached.add(new_admitted + new_skipped, decay)
        self._damp(dt)

    def _hold_or_prior_s(self) -> float:
        hold = self.hold_s
        return hold if hold is not None else self.prior.expected_session_s

    @property
    def hold_s(self) -> float | None:
        """Mean time a slot stays taken, measured when sessions last ended (Little's law:
        slot-seconds over sessions ended); None until MIN_ENDED_FOR_HOLD have."""
        return self._hold_s

    @property
    def slot_hold_s(self) -> float:
        """The hold that paces admission while max_active binds: measured (or the prior), and
        never shorter than the slots have now been full with nothing ending."""
        full_for = 0.0
        if self._full_since is not None and self._last is not None:
            full_for = self._last[0] - self._full_since
        return max(self._hold_or_prior_s(), full_for)

    @property
    def measured_per_s(self) -> float:
        return self._admitted.value / self._backlog_s.value if self._backlog_s.value else 0.0

    @property
    def skip_fraction(self) -> float:
        return self._skipped.value / self._reached.value if self._reached.value else 0.0

    @property
    def prior_per_s(self) -> float:
        return self.prior.admissions_per_s(self.slot_hold_s)

    @property
    def admissions_per_s(self) -> float:
        """The bucket's pace (measured blended with admit_rate, never above it: the bucket
        lets a burst through at opening or on resume, but no more than admit_rate for long,
        so a burst measured over a few seconds must not promise a short wait), or fewer when
        max_active binds."""
        trust = 1.0 - math.pow(0.5, self.evidence_s / EVIDENCE_HALF_LIFE_S)
        rate = self.prior.admit_rate
        bucket = trust * self.measured_per_s + (1 - trust) * rate
        return max(1e-6, min(bucket, rate, self.prior_per_s))

    @property
    def estimated_seconds_per_place(self) -> float:
        """Expected seconds of wait per ticket ahead as estimated now (skipped tickets cost
        nothing), before damping."""
        return max(0.0, 1.0 - self.skip_fraction) / self.admissions_per_s

    @property
    def seconds_per_place(self) -> float:
        """Seconds of wait per ticket ahead, as shown: the estimate, damped (ETA_DOUBLING_S),
        and never faster than admit_rate allows."""
        fastest = max(0.0, 1.0 - self.skip_fraction) / self.prior.admit_rate
        shown = self._shown if self._shown is not None else self.estimated_seconds_per_place
        return max(shown, fastest)

    def _damp(self, dt: float) -> None:
        target = self.estimated_seconds_per_place
        if self._shown is None or self._shown_for != self.prior or self._shown <= 0:
            self._shown, self._shown_for = target, self.prior
            return
        step = math.pow(2.0, dt / ETA_DOUBLING_S)
        self._shown = min(max(target, self._shown / step), self._shown * step)


def eta_s(ahead: int, seconds_per_place: float) -> int:
    return round(ahead * seconds_per_place) if ahead > 0 else 0


def poll_after_ms(eta_seconds: float) -> int:
    """When a waiting holder should poll again, from their expected wait."""
    return int(min(MAX_POLL_MS, max(MIN_POLL_MS, eta_seconds * 1000 * POLL_SHARE)))


def prequeue_poll_after_ms(until_open_s: float, prequeue_size: int, spread_draw: float) -> int:
    """When a pre-queue holder should poll again: halfway to the opening while it is far, then
    just after the opening, at a random point (`spread_draw` in [0, 1)) of a window wide enough
    that the whole pre-queue returning costs at most
    `admission_policy.PREQUEUE_POLL_BUDGET_PER_S`."""
    if until_open_s > 2 * MIN_POLL_MS / 1000:
        return int(min(MAX_POLL_MS, max(MIN_POLL_MS, until_open_s * 500)))
    spread_s = admission_policy.prequeue_spread_s(prequeue_size)
    return int(max(0.0, until_open_s) * 1000 + MIN_POLL_MS + spread_draw * spread_s * 1000)


def poll_deadline_ms(service_now_ms: int, poll_ms: int, grace_ms: int) -> int:
    """The latest service time by which a holder told to poll in `poll_ms` must have polled
    again to keep the place (lua/admit.lua skips a ticket whose deadline passed), in whole
    milliseconds: `admission_policy.poll_deadline`."""
    return int(admission_policy.poll_deadline(service_now_ms, poll_ms, grace_ms))


def total_poll_rate(waiting: int, admissions_per_s: float, skip_fraction: float = 0.0) -> float:
    """Status polls per second that `waiting` polite holders cost in total when each polls as
    `poll_after_ms` says (the planner's figure, and the national-scale target's). The sum over
    positions in closed form, band by band (every MIN_POLL_MS near the front, a share of the
    wait in between, every MAX_POLL_MS far back), so that it is exact enough for millions."""
    per_place = max(0.0, 1.0 - skip_fraction) / max(admissions_per_s, 1e-6)
    min_s, max_s = MIN_POLL_MS / 1000, MAX_POLL_MS / 1000
    if per_place <= 0:
        return waiting / min_s
    unit = per_place * POLL_SHARE  # seconds of poll interval per place ahead
    near = min(float(waiting), min_s / unit)  # these poll every min_s
    far_from = min(float(waiting), max_s / unit)  # from here on, every max_s
    total = near / min_s
    if far_from > near:
        total += math.log(far_from / max(near, 1.0)) / unit
    return total + max(0.0, waiting - far_from) / max_s
