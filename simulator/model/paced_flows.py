"""Registration flows whose pace follows the origin's load: a flow started while the origin
was slow speeds up when it recovers, and the errors it meets are those of each moment.

A flow needs `base_s` of progress (its length at no load: think time plus the origin's
service time). Progress runs at the origin's `flow_speed` (1 at no load, below 1 when answers
take longer or fail and are retried), so all flows share one progress clock `V(t) = ∫ speed
dt`: a flow started at V0 ends when V reaches V0 + base_s. Failures are a hazard per request
(`failure_hazard`, the chance a person gives up the step after the errors of this moment), so
one global integral `G(t) = ∫ hazard dV` serves every flow too: a flow with `requests` to send
fails when its share `(G - G0) * requests / base_s` passes an exponential draw of its own.
Speed and hazard change at the ticks; then every flow in progress gets its new end time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SPEED_CHANGE = 1e-3
"""A relative change of speed below this keeps the flows' end times (no rescheduling)."""


@dataclass
class _Flow:
    progress_end: float
    hazard_limit: float
    end_at: float


class PacedFlows:
    def __init__(self, requests_per_flow: float) -> None:
        self.requests_per_flow = requests_per_flow
        self.at = 0.0
        self.progress = 0.0
        self.hazard_sum = 0.0
        self.speed = 1.0
        self.hazard = 0.0
        self.flows: dict[int, _Flow] = {}

    def _advance_to(self, t: float) -> None:
        if t > self.at:
            gained = self.speed * (t - self.at)
            self.progress += gained
            self.hazard_sum += self.hazard * gained
            self.at = t

    def start(self, t: float, ticket: int, base_s: float, failure_draw: float) -> float:
        """A flow starts: when it ends at the present pace. `failure_draw` ~ Exp(1)."""
        self._advance_to(t)
        limit = self.hazard_sum + failure_draw * base_s / self.requests_per_flow
        end_at = t + base_s / self.speed
        self.flows[ticket] = _Flow(self.progress + base_s, limit, end_at)
        return end_at

    def end(self, ticket: int) -> None:
        self.flows.pop(ticket, None)

    def repace(self, t: float, speed: float, hazard: float) -> tuple[list[int], list[int]]:
        """The origin's pace from `t` on: the flows that failed by now, and the flows whose
        end time moved (their new `end_at`)."""
        self._advance_to(t)
        failed = [k for k, f in self.flows.items() if self.hazard_sum >= f.hazard_limit]
        for ticket in failed:
            del self.flows[ticket]
        moved: list[int] = []
        speed = max(speed, 1e-6)
        if not math.isclose(speed, self.speed, rel_tol=SPEED_CHANGE):
            for ticket, flow in self.flows.items():
                flow.end_at = t + max(0.0, flow.progress_end - self.progress) / speed
                moved.append(ticket)
            self.speed = speed
        self.hazard = hazard
        return failed, moved
