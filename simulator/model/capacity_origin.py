"""The sample origin's capacity in the offline model: workers, backlog, queue timeout and
contention (`simulator/origin/capacity.py`), a capacity that follows the scenario's
`[origin] capacity_schedule`, and what its Prometheus would show.

Calibration: every constant is the live sample origin's, as `gelombang origin --scenario`
configures it (`sample_origin_config`, the same rules as `simulator/commands/origin.py`, held
equal by a test): `capacity` workers (then the schedule's steps), a backlog of 4 x capacity,
a queue timeout of 0.8 x the scenario's `timeout_s`, the scenario's `service_ms` per step,
the origin's log-normal spread (`service_sigma`) and contention (`slowdown_per_waiter`,
`max_slowdown`). The load follows from the registrants the model has in the flow: each sends
the flow's requests (`flow.STEPS`, the KTP upload again for the oversized photos) with its
think time spread between them, as the live driver does; `origin_load.OriginQueue` steps the
origin's requests through each tick with the registrants in the flow then.

What a registrant meets (`paced_flows.PacedFlows`, driven by `flow_speed` and
`failure_hazard`): a flow progresses at the share of its no-load request rate the origin
serves it now, and a human gives up a step after the errors of the moment with the driver's
persistence (`behaviour.persistence`; scripted clients never give up). A failed session tells
the queue (`complete`) and frees its slot; its fate is `errors`.

What the autopilot reads (`health`): over the last `window_s` (the queries' `[1m]`, or the
range of the scenario's latency query), the p95 of the requests' latencies (served ones
log-normal around their median and p95, timed-out ones at the timeout, refused ones at once)
counted into the origin's histogram buckets and interpolated as `histogram_quantile` does,
and the share of 5xx answers; no requests in the window: no latency
(Prometheus's NaN, the autopilot holds), errors 0 (the query's `clamp_min`).
"""

from __future__ import annotations

import math
import random
import re
from collections import deque
from dataclasses import dataclass

from simulator import sessions
from simulator.behaviour import BehaviourParams, persistence
from simulator.flow import OVERSIZED_PHOTO_SHARE, STEPS
from simulator.model.origin import OriginHealth
from simulator.model.origin_load import OriginQueue, ServiceTimes, TickLoad, histogram_quantile
from simulator.origin.config import DEFAULT_SERVICE_S, OriginConfig
from simulator.origin.metrics import DURATION_BUCKETS
from simulator.scenario import OriginParams, Scenario

DEFAULT_WINDOW_S = 60.0
"""The default queries' range (`[1m]`)."""
BACKLOG_PER_WORKER = 4
"""`gelombang origin`'s default backlog: 4 x capacity."""
GATEWAY_SHARE_OF_TIMEOUT = 0.8
"""`gelombang origin --scenario`: the gateway gives up at 0.8 x the client's timeout."""
MAX_RETRY_TERMS = 40


def capacity_origin(scenario: Scenario) -> CapacityOrigin:
    """The scenario's sample origin, its health read over its autopilot queries' window."""
    mix = scenario.population_mix
    return CapacityOrigin(
        scenario.origin,
        scenario.behaviour,
        bot_share=mix.bot_share + mix.joki_share,
        window_s=window_of(scenario.autopilot.latency_query),
    )


def sample_origin_config(params: OriginParams) -> OriginConfig:
    """The live sample origin `gelombang origin --scenario` runs for this `[origin]` table."""
    service_s = dict(DEFAULT_SERVICE_S)
    service_s.update({k: v / 1000 for k, v in params.service_ms.items() if k in service_s})
    return OriginConfig(
        capacity=params.capacity,
        backlog=BACKLOG_PER_WORKER * params.capacity,
        queue_timeout_s=GATEWAY_SHARE_OF_TIMEOUT * params.timeout_s,
        service_s=service_s,
        capacity_schedule=params.capacity_schedule,
    )


def window_of(query: str, default_s: float = DEFAULT_WINDOW_S) -> float:
    """The range of a PromQL query's first range selector (`[1m]` -> 60), else `default_s`."""
    match = re.search(r"\[(\d+(?:\.\d+)?)(ms|s|m|h)\]", query)
    if match is None:
        return default_s
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
    return float(match.group(1)) * unit


def flow_service_times(config: OriginConfig) -> ServiceTimes:
    """A request's service time over the flow's steps (each step once, the KTP upload again
    for the oversized photos), each log-normal around its median."""
    weights = {step.name: 1.0 for step in STEPS}
    weights["ktp"] += OVERSIZED_PHOTO_SHARE
    total = sum(weights.values())
    sigma = config.service_sigma
    medians = {name: config.median_service_s(name) for name in weights}
    mean = sum(w * medians[n] for n, w in weights.items()) / total * math.exp(sigma**2 / 2)

    def below(x: float) -> float:
        return (
            sum(
                w * 0.5 * math.erfc(-math.log(x / medians[n]) / (max(sigma, 1e-6) * math.sqrt(2)))
                for n, w in weights.items()
            )
            / total
        )

    def quantile(q: float) -> float:
        lo, hi = 1e-6, max(medians.values()) * 50
        for _ in range(80):
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if below(mid) >= q else (mid, hi)
        return hi

    return ServiceTimes(mean_s=mean, median_s=quantile(0.5), p95_s=quantile(0.95))


def step_give_up_share(error_ratio: float, behaviour: BehaviourParams) -> float:
    """The chance a human gives up one step: an error, then no retry (persistence k), ..."""
    share, reach = 0.0, 1.0  # reach: the chance of getting to attempt k's error
    for attempt in range(1, MAX_RETRY_TERMS + 1):
        reach *= error_ratio
        share += reach * (1.0 - persistence(attempt, behaviour))
        reach *= persistence(attempt, behaviour)
        if reach < 1e-9:
            break
    return share + reach


@dataclass(frozen=True)
class _Sample:
    at: float
    load: TickLoad


class CapacityOrigin:
    """An `OriginModel` whose latency and errors follow its load and its capacity."""

    def __init__(
        self,
        params: OriginParams,
        behaviour: BehaviourParams,
        *,
        bot_share: float = 0.0,
        window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        self.params = params
        self.behaviour = behaviour
        self.bot_share = bot_share
        self.window_s = window_s
        self.config = sample_origin_config(params)
        self.service = flow_service_times(self.config)
        self.requests_per_flow = len(STEPS) + OVERSIZED_PHOTO_SHARE
        self.think_per_request_s = sessions.mean_think_time_s(params) / self.requests_per_flow
        self.mean_retry_delay_s = behaviour.f5_share * 0.5 * (
            behaviour.f5_min_s + behaviour.f5_max_s
        ) + (1 - behaviour.f5_share) * behaviour.retry_median_s * math.exp(
            behaviour.retry_sigma**2 / 2
        )
        self._capacity = params.capacity
        self.queue = OriginQueue(
            self.config, self.service, self.think_per_request_s, self.mean_retry_delay_s
        )
        self.sessions = 0
        self.served_per_session_s = 0.0
        """Requests served per second and registrant in the flow over the last tick."""
        self._samples: deque[_Sample] = deque()
        self._last_at: float | None = None
        self.requests = 0.0
        self.errors = 0.0
        self.history: list[tuple[float, float, float]] = []
        """(tick, requests answered since the previous one, of which failed)."""

    # ------------------------------------------------------------------ its state

    @property
    def capacity(self) -> int:
        return self._capacity

    def advance(self, t: float, sessions_in_flow: int) -> None:
        """The time is `t`: the origin serves what the registrants in the flow sent since the
        last call (their number then, its capacity then), and this many are in it now."""
        if self._last_at is not None and t > self._last_at:
            dt = t - self._last_at
            load = self.queue.run(self.sessions, self._capacity, dt)
            self.requests += load.requests
            self.errors += load.failed
            self.history.append((t, load.requests, load.failed))
            self._samples.append(_Sample(t, load))
            self.served_per_session_s = load.served / dt / max(self.sessions, 1)
        self._last_at = t
        while self._samples and self._samples[0].at <= t - self.window_s:
            self._samples.popleft()
        self._capacity = self.params.capacity_at(t)
        self.sessions = sessions_in_flow

    @property
    def error_ratio(self) -> float:
        """The failed share of the requests of the last tick."""
        return self.queue.error_ratio

    # ------------------------------------------------------------------ OriginModel

    paced = True

    def session_s(self, rng: random.Random) -> float:
        """A session's length at no load (the flow then follows the origin's pace)."""
        return sessions.think_time_s(rng, self.params) + sessions.flow_service_s(self.params)

    def flow_speed(self) -> float:
        """Requests served per second and registrant over the last tick, over the same at no
        load (one per think time plus service time): a flow needs all its requests answered,
        so flows cannot finish faster than the origin serves them."""
        if self.sessions == 0 or self._last_at is None:
            return 1.0
        idle = self.think_per_request_s + self.service.mean_s
        return min(1.0, self.served_per_session_s * idle)

    def failure_hazard(self) -> float:
        give_up = step_give_up_share(self.error_ratio, self.behaviour)
        human = 1.0 - self.bot_share
        return -math.log(max(1e-12, 1.0 - human * give_up))

    def requests_in_flight(self, sessions_in_flow: int) -> int:
        return round(min(self.queue.at_origin, float(sessions_in_flow)))

    def health(self, sessions_in_flow: int = 0) -> OriginHealth:
        loads = [s.load for s in self._samples]
        requests = sum(load.requests for load in loads)
        if requests <= 1e-9:
            return OriginHealth(latency_s=None, error_ratio=0.0)
        errors = sum(load.failed for load in loads)
        parts = [(load.served, load.served_median_s, load.served_p95_s) for load in loads]
        refused = errors - sum(load.timed_out for load in loads)
        parts.append((refused, 1e-3, 2e-3))  # refused at once: a 503 takes no time
        timed_out = sum(load.timed_out for load in loads)
        p95 = histogram_quantile(
            parts, timed_out, self.config.queue_timeout_s, 0.95, DURATION_BUCKETS
        )
        return OriginHealth(latency_s=p95, error_ratio=errors / requests)

    def idle_latency_s(self) -> float:
        """What the latency query reads for an origin at no load: the p95 of its service
        times, interpolated inside the histogram bucket it falls in (0.87 s for the sample
        origin's steps, in the 0.5-1 s bucket)."""
        parts = [(1.0, self.service.median_s, self.service.p95_s)]
        return histogram_quantile(parts, 0.0, self.config.queue_timeout_s, 0.95, DURATION_BUCKETS)

    def describe(self) -> str:
        schedule = ", ".join(f"{c} from {t:g} s" for t, c in self.params.capacity_schedule)
        return (
            f"model: the sample origin's capacity ({self.params.capacity} workers"
            + (f"; {schedule}" if schedule else "")
            + f", backlog {self.config.backlog}, timeout {self.config.queue_timeout_s:g} s); "
            "origin_inflight is requests at the origin (in service or waiting)"
        )
