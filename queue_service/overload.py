"""Load shedding: beyond its limits a process answers a fast 503 with Retry-After instead of
queueing work until every answer is late (a slow collapse that takes the healthy requests down
with it).

Two signals, both per process:
- requests of one route in flight (inside its handler: reading a body, waiting for a Redis
  batch) above `max_inflight`: the process is waiting on something slower than their arrivals.
  Counted per route, so a flood of joins waiting on Redis never sheds the status polls of
  people already in line, which are answered without waiting;
- event-loop lag above `max_lag_s`: the process is out of CPU, every request waits its turn.
A shed request costs microseconds: it is refused before its body is read and before any
handler runs. `/readyz` reports saturation (503 "saturated") before shedding starts, so a load
balancer can steer new connections to other replicas. Health, readiness and metrics are never
shed: that is how operators see the overload.
"""

from __future__ import annotations

from dataclasses import dataclass

SATURATED_SHARE = 0.8
"""Readiness says saturated from this share of max_inflight (or of max_lag_s) on."""
SHED_RETRY_AFTER_S = 2


@dataclass(slots=True)
class OverloadGuard:
    max_inflight: int
    max_lag_s: float
    inflight: int = 0
    """Requests in flight, every route together (readiness)."""
    lag_s: float = 0.0
    """The latest event-loop lag the monitor measured (loop_lag.py)."""
    shed: int = 0

    def admits(self, route_inflight: int) -> bool:
        """Whether a new request of a route with `route_inflight` in flight may start now."""
        return route_inflight < self.max_inflight and self.lag_s < self.max_lag_s

    @property
    def saturated(self) -> bool:
        return (
            self.inflight >= SATURATED_SHARE * self.max_inflight
            or self.lag_s >= SATURATED_SHARE * self.max_lag_s
        )
