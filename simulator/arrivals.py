"""First-attempt arrivals as a non-homogeneous Poisson process, generated lazily by thinning.

The intensity (arrivals per second) around a wave opening at `T0` and closing at `Tc` is

    lambda(t) = N * (p_pre * f_pre(t) + p_spike * f_spike(t) + p_tail * f_tail(t)
                     + p_last * f_last(t))

with each f a probability density (it integrates to 1 over its support):

- f_pre   ∝ exp((t - T0) / tau_pre)                on [T0 - pre_window_s, T0): build-up;
- f_spike ∝ exp(-(t - T0) / tau_spike)             on [T0, Tc): the opening spike and decay;
- f_tail  ∝ d(local hour) * exp(-(t - T0) / tau_tail) on [T0, Tc): the long tail, with a
  diurnal weight d for each local hour;
- f_last  ∝ exp((t - Tc) / tau_last)               on [T0, Tc): the closing rush.

So N is the expected number of first attempts when the shares add up to 1.

Interface:

- `ArrivalParams`: the shares and time constants (a scenario's `[arrivals]` table).
- `ArrivalProcess(params, expected_total, opens_at_s, closes_at_s, start_hour=0.0)`:
  `rate(t)`, `expected_count(a, b)` (closed-form integral of the rate) and
  `times(seed)`, a lazy iterator of arrival times in increasing order (millions without a list).

Thinning (Lewis and Shedler): the time axis is cut into short segments, each with an upper
bound of the rate; candidates from a homogeneous process at that bound are kept with
probability rate(t) / bound. Segments are short against every time constant, so most
candidates are kept.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

# Weight of each local hour for the long tail [E]: 0.2 in 01-05, 1.0 in 08-12, 0.8 in 12-18,
# 1.3 in 19-23 [E]; the hours in between interpolated by hand.
PRAKERJA_DIURNAL: tuple[float, ...] = (
    0.6, 0.2, 0.2, 0.2, 0.2, 0.4, 0.6, 0.8,  # 00-07
    1.0, 1.0, 1.0, 1.0, 0.8, 0.8, 0.8, 0.8,  # 08-15
    0.8, 0.8, 1.0, 1.3, 1.3, 1.3, 1.3, 1.0,  # 16-23
)  # fmt: skip


@dataclass(frozen=True)
class ArrivalParams:
    p_pre: float = 0.08
    p_spike: float = 0.22
    p_tail: float = 0.62
    p_last: float = 0.08
    tau_pre_s: float = 600.0  # build-up time constant (10 min) [E]
    pre_window_s: float = 3600.0  # build-up starts this long before opening (60 min) [E]
    tau_spike_s: float = 900.0  # spike decay (15 min) [E]
    tau_tail_s: float = 30 * 3600.0  # long-tail decay (30 h) [E]
    tau_last_s: float = 3 * 3600.0  # closing rush (3 h) [E]
    diurnal: tuple[float, ...] = ()  # 24 hourly weights for the tail; empty = flat

    def __post_init__(self) -> None:
        shares = (self.p_pre, self.p_spike, self.p_tail, self.p_last)
        if any(p < 0 for p in shares) or not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
            raise ValueError(
                "arrivals.p_pre + p_spike + p_tail + p_last must add up to 1 (each >= 0), "
                f"got {sum(shares):.6f}"
            )
        for name in ("tau_pre_s", "tau_spike_s", "tau_tail_s", "tau_last_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"arrivals.{name} must be > 0")
        if self.pre_window_s < 0:
            raise ValueError("arrivals.pre_window_s must be >= 0")
        if self.diurnal and (len(self.diurnal) != 24 or any(w < 0 for w in self.diurnal)):
            raise ValueError("arrivals.diurnal must be empty or 24 weights >= 0")
        if self.diurnal and sum(self.diurnal) == 0:
            raise ValueError("arrivals.diurnal must have a positive weight")


def _exp_integral(a: float, b: float, origin: float, tau: float, sign: float) -> float:
    """Integral over [a, b] of exp(sign * (t - origin) / tau)."""
    if b <= a:
        return 0.0
    return sign * tau * (math.exp(sign * (b - origin) / tau) - math.exp(sign * (a - origin) / tau))


class ArrivalProcess:
    def __init__(
        self,
        params: ArrivalParams,
        expected_total: float,
        opens_at_s: float,
        closes_at_s: float,
        start_hour: float = 0.0,
    ) -> None:
        if closes_at_s <= opens_at_s:
            raise ValueError("closes_at_s must be after opens_at_s")
        if expected_total < 0:
            raise ValueError("expected_total must be >= 0")
        self.params = params
        self.n = float(expected_total)
        self.t0 = float(opens_at_s)
        self.tc = float(closes_at_s)
        self.pre_start = self.t0 - params.pre_window_s
        self.start_hour = start_hour
        p = params
        # Normalising constants: each f integrates to 1 over its support.
        self._z_pre = _exp_integral(self.pre_start, self.t0, self.t0, p.tau_pre_s, 1.0)
        self._z_spike = _exp_integral(self.t0, self.tc, self.t0, p.tau_spike_s, -1.0)
        self._z_last = _exp_integral(self.t0, self.tc, self.tc, p.tau_last_s, 1.0)
        self._z_tail = self._tail_mass(self.t0, self.tc)
        self.start = self.pre_start if p.pre_window_s > 0 and p.p_pre > 0 else self.t0

    # ---------------------------------------------------------------- intensity and its integral

    def _diurnal(self, t: float) -> float:
        weights = self.params.diurnal
        if not weights:
            return 1.0
        hour = math.floor(self.start_hour + t / 3600.0) % 24
        return weights[hour]

    def _hour_edges(self, a: float, b: float) -> Iterator[tuple[float, float]]:
        """[a, b] cut at local hour boundaries (one piece when the tail is flat)."""
        if not self.params.diurnal:
            yield a, b
            return
        offset = self.start_hour * 3600.0
        edge = (math.floor((a + offset) / 3600.0) + 1) * 3600.0 - offset
        while edge < b:
            yield a, edge
            a = edge
            edge += 3600.0
        yield a, b

    def _tail_mass(self, a: float, b: float) -> float:
        a, b = max(a, self.t0), min(b, self.tc)
        total = 0.0
        for lo, hi in self._hour_edges(a, b) if b > a else ():
            total += self._diurnal(lo) * _exp_integral(
                lo, hi, self.t0, self.params.tau_tail_s, -1.0
            )
        return total

    def rate(self, t: float) -> float:
        """Arrivals per second at time t."""
        p = self.params
        if t < self.start or t >= self.tc:
            return 0.0
        if t < self.t0:
            if self._z_pre <= 0:
                return 0.0
            return self.n * p.p_pre * math.exp((t - self.t0) / p.tau_pre_s) / self._z_pre
        value = p.p_spike * math.exp(-(t - self.t0) / p.tau_spike_s) / self._z_spike
        value += p.p_last * math.exp((t - self.tc) / p.tau_last_s) / self._z_last
        if self._z_tail > 0:
            tail = self._diurnal(t) * math.exp(-(t - self.t0) / p.tau_tail_s) / self._z_tail
            value += p.p_tail * tail
        return self.n * value

    def expected_count(self, a: float, b: float) -> float:
        """Integral of the rate over [a, b): the expected number of arrivals in it."""
        p = self.params
        total = 0.0
        lo, hi = max(a, self.pre_start), min(b, self.t0)
        if hi > lo and self._z_pre > 0:
            total += p.p_pre * _exp_integral(lo, hi, self.t0, p.tau_pre_s, 1.0) / self._z_pre
        lo, hi = max(a, self.t0), min(b, self.tc)
        if hi > lo:
            total += p.p_spike * _exp_integral(lo, hi, self.t0, p.tau_spike_s, -1.0) / self._z_spike
            total += p.p_last * _exp_integral(lo, hi, self.tc, p.tau_last_s, 1.0) / self._z_last
            if self._z_tail > 0:
                total += p.p_tail * self._tail_mass(lo, hi) / self._z_tail
        return self.n * total

    # ---------------------------------------------------------------- thinning

    def _segments(self) -> list[tuple[float, float, float, float]]:
        """(start, end, upper bound, lower bound of the rate) covering [start, tc)."""
        p = self.params
        step = min(p.tau_pre_s, p.tau_spike_s, p.tau_last_s, p.tau_tail_s, 3600.0) / 8.0
        step = max(step, (self.tc - self.start) / 50_000.0)
        edges = {self.start, self.t0, self.tc}
        k = 1
        while self.start + k * step < self.tc:
            edges.add(self.start + k * step)
            k += 1
        if p.diurnal:
            for lo, _ in self._hour_edges(self.t0, self.tc):
                edges.add(lo)
        ordered = sorted(e for e in edges if self.start <= e <= self.tc)
        segments = []
        for lo, hi in itertools.pairwise(ordered):
            if hi <= lo:
                continue
            segments.append((lo, hi, self._bound(lo, hi), self._floor(lo, hi)))
        return segments

    def _floor(self, lo: float, hi: float) -> float:
        """A lower bound of the rate on [lo, hi): candidates under it are kept without
        evaluating the rate (the "squeeze"), which is most of them."""
        p = self.params
        if hi <= self.t0:
            if self._z_pre <= 0:
                return 0.0
            return (
                0.999999 * self.n * p.p_pre * math.exp((lo - self.t0) / p.tau_pre_s) / self._z_pre
            )
        value = p.p_spike * math.exp(-(hi - self.t0) / p.tau_spike_s) / self._z_spike
        value += p.p_last * math.exp((lo - self.tc) / p.tau_last_s) / self._z_last
        if self._z_tail > 0:
            weight = self._diurnal((lo + hi) / 2.0)
            value += p.p_tail * weight * math.exp(-(hi - self.t0) / p.tau_tail_s) / self._z_tail
        return 0.999999 * self.n * value

    def _bound(self, lo: float, hi: float) -> float:
        """An upper bound of the rate on [lo, hi) from each component's maximum.

        Each component is monotone on a segment and the diurnal weight is constant on it
        (segments are cut at hour edges), so each maximum sits at one end; the small margin
        covers rounding.
        """
        p = self.params
        if hi <= self.t0:
            if self._z_pre <= 0:
                return 0.0
            return (
                1.000001 * self.n * p.p_pre * math.exp((hi - self.t0) / p.tau_pre_s) / self._z_pre
            )
        value = p.p_spike * math.exp(-(lo - self.t0) / p.tau_spike_s) / self._z_spike
        value += p.p_last * math.exp((hi - self.tc) / p.tau_last_s) / self._z_last
        if self._z_tail > 0:
            weight = self._diurnal((lo + hi) / 2.0)
            value += p.p_tail * weight * math.exp(-(lo - self.t0) / p.tau_tail_s) / self._z_tail
        return 1.000001 * self.n * value

    def times(self, seed: int, limit: int | None = None) -> Iterator[float]:
        """Arrival times in increasing order, deterministic for `seed`; at most `limit`."""
        rng = random.Random(seed)
        uniform, rate, log = rng.random, self.rate, math.log
        emitted = 0
        for lo, hi, bound, floor in self._segments():
            if bound <= 0:
                continue
            # Exponential gaps at rate `bound`, inlined (`random.expovariate` is Python code).
            scale = -1.0 / bound
            t = lo + scale * log(1.0 - uniform())
            while t < hi:
                u = uniform() * bound
                if u < floor or u < rate(t):
                    yield t
                    emitted += 1
                    if limit is not None and emitted >= limit:
                        return
                t += scale * log(1.0 - uniform())
