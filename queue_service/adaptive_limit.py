"""The adaptive bound on one process's concurrency: how many connections it keeps open (and how
many requests one route may have in flight) so that the requests it accepts wait about a target
queueing delay, on whatever host it runs. Pure: no I/O and no clock; the process feeds it
measurements with their times (loop_lag.py) and applies the limit it returns (overload.py).

The law is Little's law, N = X·W (requests in the system = throughput × time in the system):

    X̂ = EWMA of requests completed per second                  (throughput)
    ρ̂ = EWMA of the process's CPU seconds per second            (how busy it is)
    Ŵ = EWMA of the queueing delay, the wait for the event loop,
        × min(1, ρ̂ / ½): the share of it the process's own work explains
    Ĉ = EWMA of the connections open                            (concurrency)
    wanted = Ĉ − X̂·(Ŵ − W*)     W* = the target queueing delay (default 30 ms)

X̂·(Ŵ − W*) is the queue in excess of the target: the requests that would have to leave for the
rest to wait W*. For clients that send again the moment they are answered (a flood; wrk),
Ĉ = X̂·Ŵ and `wanted` is the textbook bound X̂·W*: requests per second × target delay. For
people who poll every few seconds (a think time Z), Ĉ = X̂·(Ŵ + Z) and `wanted` = X̂·(W* + Z):
an idle keep-alive connection costs nothing and is not mistaken for queue.

Each update:
- Ŵ above W*·(1 + tolerance): decrease to `wanted`, but by at most `max_decrease` of the open
  concurrency (or of the limit, if lower) per update;
- Ŵ below W*·(1 − tolerance), and so is the delay measured just now, the limit binds (someone
  was turned away since the last update) and it has not changed for `growth_hold_s`: increase
  by the larger of Little's room (`wanted` − limit) and a share of the limit proportional to
  the slack (`max_increase`·(1 − Ŵ/W*)), never by more than `max_increase` of it. Growing only
  while turning people away means the delay the growth is judged on includes the work of
  refusing them; waiting two time constants between steps means it is judged on the last
  step's effect, not on averages that have not seen it yet;
- otherwise hold: the dead band around the target is the hysteresis;
- always within [minimum, maximum].

Failure modes, and what keeps each away:
- Oscillation. A controller that recomputes from the current state while its inputs still show
  the past cuts twice for one excess, and grows past the target before the delay shows it.
  Here X̂, Ŵ and Ĉ are smoothed with the same time constant, so `wanted` is computed from a
  consistent picture (in a flood Ĉ ≈ X̂·Ŵ holds for the smoothed values too and `wanted` stays
  X̂·W* while they catch up); growth waits two time constants between steps (and after the
  start, when the averages know nothing yet), and stops as soon as the delay measured just now
  is over the target, however low its average still is; the dead band stops the dithering
  that measurement noise would cause, and the step bounds keep a glitch from moving far.
- A baseline that creeps. Gradient and Vegas limits compare against a remembered no-load
  latency, which drifts up under sustained load until the limit admits everything. The target
  here is an absolute delay, never learned; the limit grows only while it binds, so an idle
  process does not drift to `maximum` and meet a flood with no bound.
- A floor that never recovers. A limit that only shrinks on delay can sit at its minimum after
  the cause has gone (a CPU-hungry neighbour, a GC pause, a slow start). The minimum is never 0,
  the delay is measured with whatever is admitted, and once it is back under the target the
  limit grows again by up to `max_increase` per step (×1.5 a second with the defaults).
- Delay that is not the process's own. A process that is busy half of the time or more is
  the cause of its loop's delay (if a neighbour takes part of the CPU, each turn still shrinks
  with the work shed); one that is mostly idle and still late is waiting for a CPU that other
  processes hold (the simulator's crowd on the same laptop, a CI machine running tests side by
  side), and shedding its few requests would not make it faster. So the delay is weighted by
  the busy share up to one half: a process busy 10% of the time counts a fifth of its delay as
  its own. The decrease is also in proportion to the process's own throughput, so a process
  that serves little sheds little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TARGET_QUEUE_DELAY_S = 0.03
"""The default W*: the mean wait for one turn of the event loop. A request waits for the loop
at each of its steps: a status poll about twice (its bytes are read, then its handler runs), a
join four or five times (it also waits for its Redis batch and the one ahead of it). On the
2-core reference host, a flooded process whose turns took 30 ms kept the p99 of the joins and
polls it accepted under the 250 ms the overload guarantee promises, with room for the host's
noise; at 50 ms the joins' p99 went past it (loadtests/RESULTS.md)."""


@dataclass(frozen=True, slots=True)
class LimitLaw:
    """The constants of the law; the defaults are those of the connection bound."""

    target_delay_s: float = TARGET_QUEUE_DELAY_S
    minimum: int = 64
    """Never fewer: a load balancer's upstream pool, a benchmark's 64 connections."""
    maximum: int = 10_000
    """Never more: file descriptors and memory (a few KB each) stay bounded."""
    initial: int = 256
    """Before the first measurement: what a host serving about 8,000 requests/s keeps within
    the target; the limit grows from here while it binds and the delay allows."""
    smoothing_s: float = 0.5
    """Time constant of every EWMA: a flood is seen within a second, one slow loop turn is not
    mistaken for one."""
    tolerance: float = 0.25
    """Dead band: no change while Ŵ is within ±25% of W*."""
    max_decrease: float = 0.5
    """Per update, at most half of the open concurrency goes (decrease fast on overload)."""
    max_increase: float = 0.5
    """Per step (one per `growth_hold_s` at most), the limit grows by at most 50%."""
    growth_hold_s: float = 1.0
    """Time between two steps up: two time constants, so a step is judged on its effect."""
    busy_share: float = 0.5
    """From this share of its time spent working (CPU), a process's delay is all its own."""

    def __post_init__(self) -> None:
        if not 0 < self.minimum <= self.initial <= self.maximum:
            raise ValueError("the limit law needs 0 < minimum <= initial <= maximum")
        if self.target_delay_s <= 0 or self.smoothing_s <= 0:
            raise ValueError("the target delay and the smoothing time must be above 0")
        if not (0 < self.tolerance < 1 and 0 < self.max_decrease < 1 and self.max_increase > 0):
            raise ValueError("tolerance and max_decrease in (0, 1), max_increase above 0")
        if not 0 < self.busy_share <= 1:
            raise ValueError("busy_share in (0, 1]")


@dataclass(frozen=True, slots=True)
class Measurement:
    """What the process saw at one moment."""

    at_s: float
    """When, in seconds on any monotonic clock (only differences are used)."""
    completed: int
    """Requests completed since the process started (a counter; only its increase is used)."""
    delay_s: float
    """The queueing delay observed now: how long a request waits for the event loop."""
    concurrency: int
    """Connections open now."""
    turned_away: int = 0
    """Connections refused and requests shed since the process started (a counter): the limit
    binds while it grows."""
    cpu_s: float | None = None
    """CPU time the process has used since it started (a counter); None: taken as always busy."""


class AdaptiveLimit:
    """The current limit and the smoothed inputs it was computed from (see the module doc)."""

    def __init__(self, law: LimitLaw | None = None) -> None:
        self.law = law or LimitLaw()
        self.limit = self.law.initial
        self.throughput = 0.0
        """X̂, requests per second."""
        self.measured_delay_s = 0.0
        """EWMA of the delays measured, seconds."""
        self.busy = 1.0
        """ρ̂, CPU seconds per second (1 until measured)."""
        self.concurrency = 0.0
        """Ĉ, connections."""
        self._last: Measurement | None = None
        self._changed_at = -math.inf

    def update(self, measured: Measurement) -> int:
        """Take one measurement; return the limit to apply from now on."""
        last, self._last = self._last, measured
        if last is None:  # the first one only starts the clock and the counters
            self.measured_delay_s = max(0.0, measured.delay_s)
            self.concurrency = float(measured.concurrency)
            self._changed_at = measured.at_s  # no growth until the averages know something
            return self.limit
        elapsed = measured.at_s - last.at_s
        if elapsed <= 0:
            self._last = last  # a repeated or out-of-order time: ignored
            return self.limit
        completed = max(0, measured.completed - last.completed)  # a reset counter: no work seen
        weight = 1.0 - math.exp(-elapsed / self.law.smoothing_s)  # time-based EWMA
        self.throughput += weight * (completed / elapsed - self.throughput)
        self.measured_delay_s += weight * (max(0.0, measured.delay_s) - self.measured_delay_s)
        self.concurrency += weight * (measured.concurrency - self.concurrency)
        if measured.cpu_s is not None and last.cpu_s is not None:
            busy = max(0.0, measured.cpu_s - last.cpu_s) / elapsed
            self.busy += weight * (min(1.0, busy) - self.busy)
        may_grow = (
            measured.turned_away > last.turned_away
            and measured.at_s - self._changed_at >= self.law.growth_hold_s
            and measured.delay_s * self._own_share < self.law.target_delay_s
        )
        limit = self._next_limit(measured.concurrency, may_grow)
        if limit != self.limit:
            self.limit, self._changed_at = limit, measured.at_s
        return self.limit

    @property
    def _own_share(self) -> float:
        return min(1.0, self.busy / self.law.busy_share)

    @property
    def delay_s(self) -> float:
        """Ŵ: the smoothed delay, as much of it as the process's own work explains."""
        return self.measured_delay_s * self._own_share

    def _next_limit(self, open_now: int, may_grow: bool) -> int:
        law = self.law
        target = law.target_delay_s
        delay = self.delay_s
        wanted = self.concurrency - self.throughput * (delay - target)
        limit = float(self.limit)
        if delay > target * (1 + law.tolerance):
            # a limit far above what is open does not bind: lowering it to the open count
            # changes nothing, so the bounded step is taken from there
            base = min(limit, self.concurrency, float(open_now))
            limit = min(limit, max(wanted, base * (1 - law.max_decrease)))
        elif delay < target * (1 - law.tolerance) and may_grow:
            slack = 1 - delay / target
            step = max(wanted - limit, limit * law.max_increase * slack)
            limit += min(max(step, 1.0), limit * law.max_increase)
        return max(law.minimum, min(law.maximum, round(limit)))
