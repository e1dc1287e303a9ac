"""The sample origin's requests as a fluid: what `simulator/origin/capacity.py` does to them
when `n` registrants are in the flow, stepped through time (a few hundred small steps a tick).

The sample origin serves at most `capacity` requests at once (the worker pool), lets up to
`backlog` more wait, drops a request that waited `queue_timeout_s` (504) and refuses one that
finds the backlog full (503); with `w` requests waiting every service time is multiplied by
`min(max_slowdown, 1 + slowdown_per_waiter * w / capacity)` (contention). Registrants in the
flow are a closed loop: each thinks `z` seconds (its think time spread over the flow's
requests; after a failure, a retry delay instead), sends a request and waits for the answer.
With Q requests at the origin:

    in service  min(Q, c)                 waiting  w = Q - min(Q, c)
    served      X = min(Q, c) / (s * slowdown(w))        per second
    wait        W = w / X                 (first come, first served)
    timed out   D = min(X * p / (1 - p), w / T),  p = P(wait > T)  (the wait: w service gaps,
                  mean W, sd W / sqrt(w); exponential if w < 1; none leaves before waiting T)
    sent        lam = (n - Q) / z         (refused at once while w >= backlog)
    dQ/dt = lam - X - D

Stepped rather than solved because an origin with contention is bistable: the same `n` can
be served healthily or in collapse (a deep backlog slows every worker, so fewer are served and
the backlog stays deep), and which one it is depends on how it got there, as live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.origin.config import OriginConfig

WAIT_P95_OVER_MEAN = 3.0
"""An exponential wait's p95 is 3 x its mean (ln 20)."""
MAX_TIMEOUT_SHARE = 0.99
STEP_OF_FASTEST = 0.25
"""A step is at most this share of the think time and of the service time (stable Euler)."""
MAX_STEP_S = 0.02


@dataclass(frozen=True)
class ServiceTimes:
    """One request's service time at no load, over the flow's mix of steps (seconds)."""

    mean_s: float
    median_s: float
    p95_s: float


@dataclass(frozen=True)
class TickLoad:
    """What the origin did over one tick, as its metrics would count it."""

    served: float
    """Requests answered successfully."""
    failed: float
    """Requests answered 503 (backlog full) or 504 (waited past the timeout)."""
    timed_out: float
    served_median_s: float
    served_p95_s: float
    slowdown: float
    at_origin: float
    """Requests at the origin at the end of the tick (in service or waiting)."""

    @property
    def requests(self) -> float:
        return self.served + self.failed

    @property
    def error_ratio(self) -> float:
        return self.failed / self.requests if self.requests > 0 else 0.0


class OriginQueue:
    """The origin's requests, stepped through time."""

    def __init__(self, config: OriginConfig, service: ServiceTimes, think_per_request_s: float,
                 retry_delay_s: float) -> None:  # fmt: skip
        self.config = config
        self.service = service
        self.think_s = max(think_per_request_s, 1e-4)
        self.retry_delay_s = retry_delay_s
        self.at_origin = 0.0
        self.error_ratio = 0.0
        """The share that failed over the last tick (how many are waiting to retry)."""

    def run(self, sessions: int, capacity: int, seconds: float) -> TickLoad:
        """`seconds` with `sessions` registrants in the flow and `capacity` workers."""
        config, service = self.config, self.service
        c, timeout, backlog = float(capacity), config.queue_timeout_s, float(config.backlog)
        pause = (1.0 - self.error_ratio) * self.think_s + self.error_ratio * self.retry_delay_s
        pause = max(pause, 1e-4)
        dt = min(MAX_STEP_S, STEP_OF_FASTEST * pause, STEP_OF_FASTEST * service.mean_s)
        steps = max(1, math.ceil(seconds / dt))
        dt = seconds / steps
        q = min(self.at_origin, float(sessions))
        served = failed = timed_out = wait_sum = wait_p95_sum = slow_sum = 0.0
        for _ in range(steps):
            busy = min(q, c)
            waiting = q - busy
            slow = min(config.max_slowdown, 1.0 + config.slowdown_per_waiter * waiting / c)
            done = busy / (service.mean_s * slow)
            wait = waiting / done if done > 0 else 0.0
            drop = 0.0
            if waiting > 0 and wait > 0:
                p = min(MAX_TIMEOUT_SHARE, wait_beyond(timeout, wait, waiting))
                # no request times out before it has waited T: at most all of them per T
                drop = min(done * p / (1.0 - p), waiting / timeout)
            sent = max(0.0, sessions - q) / pause
            refused = sent if waiting >= backlog else 0.0
            q = min(float(sessions), max(0.0, q + (sent - refused - done - drop) * dt))
            served += done * dt
            timed_out += drop * dt
            failed += (drop + refused) * dt
            wait_sum += min(wait, timeout) * done * dt
            wait_p95_sum += wait_p95(timeout, wait, waiting) * done * dt
            slow_sum += slow * done * dt
        self.at_origin = q
        answered = served + failed
        self.error_ratio = failed / answered if answered > 0 else 0.0
        mean_wait = wait_sum / served if served > 0 else 0.0
        p95_wait = wait_p95_sum / served if served > 0 else 0.0
        slowdown = slow_sum / served if served > 0 else 1.0
        return TickLoad(
            served=served,
            failed=failed,
            timed_out=timed_out,
            served_median_s=service.median_s * slowdown + math.log(2) * mean_wait,
            served_p95_s=service.p95_s * slowdown + p95_wait,
            slowdown=slowdown,
            at_origin=q,
        )


def wait_beyond(timeout: float, wait: float, waiting: float) -> float:
    """The share of requests that wait longer than `timeout` when `waiting` are ahead and the
    mean wait is `wait`. First come, first served, a request waits for the `waiting` ahead of it
    to be served: a sum of that many service gaps (Erlang), so the spread narrows as the queue
    deepens (normal, sd = wait / sqrt(waiting)); with less than one ahead, exponential."""
    if waiting < 1.0:
        return math.exp(-timeout / wait)
    spread = wait / math.sqrt(waiting)
    return 0.5 * math.erfc((timeout - wait) / (spread * math.sqrt(2.0)))


def wait_p95(timeout: float, wait: float, waiting: float) -> float:
    """The p95 of a served request's wait (the same distribution, cut at the timeout)."""
    if wait <= 0:
        return 0.0
    if waiting < 1.0:
        return min(timeout, WAIT_P95_OVER_MEAN * wait)
    return min(timeout, wait * (1.0 + 1.6449 / math.sqrt(waiting)))


def lognormal_cdf(x: float, median: float, p95: float) -> float:
    """P(X <= x) for a lognormal with this median and p95."""
    if x <= 0:
        return 0.0
    sigma = max(math.log(max(p95, median * 1.0001) / median) / 1.6449, 1e-3)
    return 0.5 * math.erfc(-(math.log(x / median)) / (sigma * math.sqrt(2.0)))


def histogram_quantile(
    parts: list[tuple[float, float, float]],
    timed_out: float,
    timeout: float,
    q: float,
    buckets: tuple[float, ...],
) -> float:
    """What Prometheus's `histogram_quantile(q, ...)` answers for these requests: `parts` are
    (count, median, p95) of served requests (lognormal), `timed_out` requests took `timeout`;
    counted into the histogram's `buckets` (upper bounds), then interpolated linearly inside
    the bucket holding the rank, as Prometheus does (the highest finite bound past the last)."""
    total = sum(n for n, _, _ in parts) + timed_out
    if total <= 0:
        return math.nan

    def at_most(x: float) -> float:
        served = sum(n * lognormal_cdf(x, m, p) for n, m, p in parts if n > 0)
        return served + (timed_out if x >= timeout else 0.0)

    rank = q * total
    lower, below = 0.0, 0.0
    for bound in buckets:
        count = at_most(bound)
        if count >= rank:
            if count <= below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return buckets[-1]
