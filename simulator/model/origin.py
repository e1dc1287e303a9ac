"""The origin as the offline model sees it: how long an admitted registrant holds it, how much
of that time one of their requests is in flight there, and how healthy it is under a load.

`OriginModel` is the seam: the model asks it for every session's length and turns sessions in
the flow into requests in flight through it, and a controller reads its `health` (the
latency and error ratio an autopilot would read from Prometheus). `SampleOrigin` is the
scenario's `[origin]` at low load (`simulator.sessions`): a fixed service time and no errors.
`CapacityOrigin` (`capacity_origin.py`) is the sample origin's capacity (workers, backlog,
queue timeout, contention; `simulator/origin/capacity.py`): its latency and errors grow with
its load, its capacity follows the scenario's schedule, and some sessions fail. Every tick
the run tells the origin the time and the registrants in the flow (`advance`); the run may
also swap the origin between events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from simulator import sessions
from simulator.flow import STEPS
from simulator.scenario import OriginParams


@dataclass(frozen=True)
class OriginHealth:
    latency_s: float | None
    """A request's time at the origin (p95; None: no requests to measure, a NaN)."""
    error_ratio: float
    """The share of requests that fail (5xx, timeouts)."""


class OriginModel(Protocol):
    @property
    def capacity(self) -> int: ...
    def session_s(self, rng: random.Random) -> float:
        """One admitted registrant's time from taking up the admission to the end of the flow."""

    def advance(self, t: float, sessions_in_flow: int) -> None:
        """Every tick of the run: the time, and how many registrants are in the flow."""

    @property
    def paced(self) -> bool:
        """Whether flows follow its pace (`flow_speed`, `failure_hazard`) tick by tick;
        otherwise a session lasts what `session_s` drew."""

    @property
    def requests_per_flow(self) -> float: ...
    def flow_speed(self) -> float:
        """How fast a flow progresses now, relative to no load (1: as fast)."""

    def failure_hazard(self) -> float:
        """Per request of a flow: -ln(1 - the chance, now, that the person gives up its step
        after the origin's errors)."""

    def requests_in_flight(self, sessions_in_flow: int) -> int: ...
    def health(self, sessions_in_flow: int) -> OriginHealth: ...
    def describe(self) -> str:
        """A note for the run record: what `origin_inflight` means here."""


class SampleOrigin:
    """The scenario's origin at low load: think time plus its service time, no errors."""

    def __init__(self, params: OriginParams) -> None:
        self.params = params
        self.flow_service_s = sessions.flow_service_s(params)
        self.inflight_share = sessions.requests_in_flight_share(params)

    @property
    def capacity(self) -> int:
        return self.params.capacity

    def session_s(self, rng: random.Random) -> float:
        return sessions.think_time_s(rng, self.params) + self.flow_service_s

    def advance(self, t: float, sessions_in_flow: int) -> None:
        return None  # no state: the same at every load

    paced = False

    @property
    def requests_per_flow(self) -> float:
        return len(STEPS)

    def flow_speed(self) -> float:
        return 1.0

    def failure_hazard(self) -> float:
        return 0.0

    def requests_in_flight(self, sessions_in_flow: int) -> int:
        return round(sessions_in_flow * self.inflight_share)

    def health(self, sessions_in_flow: int) -> OriginHealth:
        return OriginHealth(latency_s=self.flow_service_s / len(STEPS), error_ratio=0.0)

    def describe(self) -> str:
        return (
            "model: origin_inflight is requests at the origin (sessions in flow x the "
            f"{self.inflight_share:.0%} of a session a request is in flight)"
        )
