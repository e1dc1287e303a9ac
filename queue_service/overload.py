"""Load shedding: beyond its limits a process answers a fast 503 with Retry-After instead of
queueing work until every answer is late (a slow collapse that takes the healthy requests down
with it).

Two signals, both per process:
- requests in flight (inside a handler: reading a body, waiting for a Redis batch) above
  `max_inflight`: the process is waiting on something slower than its arrivals;
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
    lag_s: float = 0.0
    """The latest event-loop lag the monitor measured (loop_lag.py)."""
    shed: int = 0

    def admits(self) -> bool:
        """Whether a new request may start now."""
        return self.inflight < self.max_inflight and self.lag_s < self.max_lag_s

    @property
    def saturated(self) -> bool:
        return (
            self.inflight >= SATURATED_SHARE * self.max_inflight
            or self.lag_s >= SATURATED_SHARE * self.max_lag_s
        )
