"""The origin as the offline model sees it: how long an admitted registrant holds it, how much
of that time one of their requests is in flight there, and how healthy it is under a load.

`OriginModel` is the seam: the model asks it for every session's length and turns sessions in
the flow into requests in flight through it, and a controller reads its `health` (the
latency and error ratio an autopilot would read from Prometheus). `SampleOrigin` is the
scenario's `[origin]` at low load (`simulator.sessions`): a fixed service time and no errors.
A model of the sample origin's capacity (workers, backlog, queue timeout, contention;
`simulator/origin/capacity.py`) whose latency and errors grow with its load, or whose capacity
follows a schedule, is another `OriginModel`; the run may swap it between events.
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
    latency_s: float
    """A request's time at the origin."""
    error_ratio: float
    """The share of requests that fail (5xx, timeouts)."""


class OriginModel(Protocol):
    @property
    def capacity(self) -> int: ...
    def session_s(self, rng: random.Random) -> float:
        """One admitted registrant's time from taking up the admission to the end of the flow."""

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

    def requests_in_flight(self, sessions_in_flow: int) -> int:
        return round(sessions_in_flow * self.inflight_share)

    def health(self, sessions_in_flow: int) -> OriginHealth:
        return OriginHealth(latency_s=self.flow_service_s / len(STEPS), error_ratio=0.0)

    def describe(self) -> str:
        return (
            "model: origin_inflight is requests at the origin (sessions in flow x the "
            f"{self.inflight_share:.0%} of a session a request is in flight)"
        )
