"""How fast a wave moves, and what each ticket holder is told because of it: the estimated
wait, when to poll again, and the deadline by which a holder who stays must have polled.

Pure functions and one small estimator, no I/O and no clock of their own: the service calls
them with the admission loop's counts, and the offline model and the planner import the very
same code (one policy, two clocks).

Polling load grows with the log of the queue length: a holder polls again after about a
twentieth of their expected wait (at least every second near the front, at most every
`MAX_POLL_MS` far back). With N waiting at r admissions/s the total is about
20 r (1 + ln(N / 20 r)) polls/s below the cap, plus N / cap beyond it: 5 million waiting at
17/s cost about 7,900 polls/s (`total_poll_rate`, checked by tests and the planner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_POLL_MS = 1_000
MAX_POLL_MS = 15 * 60 * 1_000
POLL_SHARE = 0.05
"""Poll again after this share of the expected wait. A twentieth keeps a holder who is admitted
sooner than predicted (the rate was raised, many ahead gave up) from arriving late by more
than 5% of their wait, and still costs O(log N) polls."""
DEADLINE_SLACK = 1.1
"""Clients jitter their polls by up to +10% (the waiting page, the simulator)."""
PREQUEUE_POLL_BUDGET_PER_S = 5_000.0
"""At opening every pre-queue holder comes back at once; spread them so they cost at most
about this many polls per second."""
PREQUEUE_MAX_SPREAD_S = 60.0
EWMA_HALF_LIFE_S = 20.0
EVIDENCE_HALF_LIFE_S = 10.0
"""How fast measured throughput takes over from the configuration's prior."""


@dataclass(frozen=True, slots=True)
class PacePrior:
    """What the wave's configuration says about its pace before anything is measured."""

    admit_rate: float
    max_active: int
    expected_session_s: float

    @property
    def admissions_per_s(self) -> float:
        """Admissions per second the configuration allows with a standing backlog: the
        token bucket's rate, or fewer when max_active binds (sessions must end first)."""
        rate = self.admit_rate
        if self.max_active > 0 and self.expected_session_s > 0:
            rate = min(rate, self.max_active / self.expected_session_s)
        return max(rate, 1e-6)


@dataclass(slots=True)
class PaceEstimate:
    """Admissions per second and the share of tickets skipped (abandoned or left), learned
    from consecutive admission-loop counts while people are waiting, blended with the prior
    until there is enough evidence."""

    prior: PacePrior
    measured_per_s: float = 0.0
    skip_fraction: float = 0.0
    evidence_s: float = 0.0
    _last: tuple[float, int, int, int] | None = None
    """(at, admitted, skipped, waiting) of the previous observation."""

    def observe(self, at: float, admitted: int, skipped: int, waiting: int) -> None:
        last, self._last = self._last, (at, admitted, skipped, waiting)
        if last is None or at <= last[0]:
            return
        dt = at - last[0]
        new_admitted = max(0, admitted - last[1])
        new_skipped = max(0, skipped - last[2])
        if last[3] > 0 or new_admitted:  # an empty queue says nothing about capacity
            weight = 1.0 - math.pow(0.5, dt / EWMA_HALF_LIFE_S)
            self.measured_per_s += weight * (new_admitted / dt - self.measured_per_s)
            self.evidence_s += dt
        if new_admitted + new_skipped:
            weight = 1.0 - math.pow(0.5, dt / EWMA_HALF_LIFE_S)
            share = new_skipped / (new_admitted + new_skipped)
            self.skip_fraction += weight * (share - self.skip_fraction)

    @property
    def admissions_per_s(self) -> float:
        trust = 1.0 - math.pow(0.5, self.evidence_s / EVIDENCE_HALF_LIFE_S)
        prior = self.prior.admissions_per_s
        return max(1e-6, trust * self.measured_per_s + (1 - trust) * prior)

    @property
    def seconds_per_place(self) -> float:
        """Expected seconds of wait per ticket ahead (skipped tickets cost nothing)."""
        return max(0.0, 1.0 - self.skip_fraction) / self.admissions_per_s


def eta_s(ahead: int, seconds_per_place: float) -> int:
    return round(ahead * seconds_per_place) if ahead > 0 else 0


def poll_after_ms(eta_seconds: float) -> int:
    """When a waiting holder should poll again, from their expected wait."""
    return int(min(MAX_POLL_MS, max(MIN_POLL_MS, eta_seconds * 1000 * POLL_SHARE)))


def prequeue_poll_after_ms(until_open_s: float, prequeue_size: int, spread_draw: float) -> int:
    """When a pre-queue holder should poll again: halfway to the opening while it is far, then
    just after the opening, at a random point (`spread_draw` in [0, 1)) of a window wide enough
    that the whole pre-queue returning costs at most PREQUEUE_POLL_BUDGET_PER_S."""
    if until_open_s > 2 * MIN_POLL_MS / 1000:
        return int(min(MAX_POLL_MS, max(MIN_POLL_MS, until_open_s * 500)))
    spread_s = min(PREQUEUE_MAX_SPREAD_S, max(1.0, prequeue_size / PREQUEUE_POLL_BUDGET_PER_S))
    return int(max(0.0, until_open_s) * 1000 + MIN_POLL_MS + spread_draw * spread_s * 1000)


def poll_deadline_ms(service_now_ms: int, poll_ms: int, grace_ms: int) -> int:
    """The latest service time by which a holder told to poll in `poll_ms` must have polled
    again to keep the place (lua/admit.lua skips a ticket whose deadline passed)."""
    return service_now_ms + int(poll_ms * DEADLINE_SLACK) + grace_ms


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
