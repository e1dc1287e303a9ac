"""Load shedding: beyond its limits a process answers a fast 503 with Retry-After instead of
queueing work until every answer is late (a slow collapse that takes the healthy requests down
with it).

Three bounds, all per process:
- open connections above `max_connections` (http/server.py): a new one is answered 503 and
  closed. This is the lever that works against a flood: every open connection that sends as
  fast as it can adds its share to every answer's wait, and a refused request on an open
  connection costs about what an answered one does;
- requests of one route in flight (inside its handler: reading a body, waiting for a Redis
  batch) above `max_inflight`: the process is waiting on something slower than their arrivals.
  Counted per route, so a flood of joins waiting on Redis never sheds the status polls of
  people already in line, which are answered without waiting;
- event-loop lag above `max_lag_s`: the process is out of CPU, every request waits its turn.

By default (`auto`) the first two follow the process's measured throughput and a target
queueing delay by Little's law (adaptive_limit.py), so they fit whatever host the process runs
on; a number pins them. When the adaptive bound falls below the connections already open, the
youngest are retired: their next request is answered 503 + Retry-After with `Connection:
close` (the oldest connections, the people who were there first, keep being served).

A shed request costs microseconds: it is refused before its body is read and before any
handler runs. `/readyz` reports saturation (503 "saturated") before shedding starts, so a load
balancer can steer new connections to other replicas. Health, readiness and metrics are never
shed: that is how operators see the overload.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from queue_service import metrics
from queue_service.adaptive_limit import AdaptiveLimit, LimitLaw, Measurement
from queue_service.settings import Settings

SATURATED_SHARE = 0.8
"""Readiness says saturated from this share of a bound (connections, in flight, lag) on."""
SHED_RETRY_AFTER_S = 2


class ConnectionPool(Protocol):
    """The server's open connections, as the guard needs them (http/server.py)."""

    def open_count(self) -> int: ...

    def retire_beyond(self, limit: int) -> int:
        """Mark the youngest connections beyond `limit` (those not marked yet) to be answered
        503 and closed at their next request; return how many were marked."""
        ...


@dataclass(slots=True)
class OverloadGuard:
    max_inflight: int
    max_lag_s: float
    max_connections: int = LimitLaw().initial
    adaptive: AdaptiveLimit | None = None
    """The controller of the bounds that are `auto`; None when both are pinned."""
    inflight_pinned: bool = True
    connections_pinned: bool = True
    inflight: int = 0
    """Requests in flight, every route together (readiness)."""
    completed: int = 0
    """Requests that went through a handler since the start (the controller's throughput)."""
    lag_s: float = 0.0
    """The latest event-loop lag the monitor measured (loop_lag.py)."""
    shed: int = 0
    """Requests shed since the start."""
    refused: int = 0
    """Connections refused or retired since the start (http/server.py, http/endpoint.py)."""
    pool: ConnectionPool | None = None
    """The server's connections; None in tests that run the app without our server."""
    retiring: set[object] = field(default_factory=set)
    """Connections (their request handlers) to answer 503 and close at their next request."""

    @classmethod
    def from_settings(cls, settings: Settings) -> OverloadGuard:
        """Pinned bounds where the settings give a number; the adaptive law where they say
        auto (None), with the settings' target queueing delay."""
        law = replace(LimitLaw(), target_delay_s=settings.target_queue_delay_s)
        adaptive = (
            AdaptiveLimit(law)
            if settings.max_connections is None or settings.max_inflight is None
            else None
        )
        return cls(
            max_inflight=settings.max_inflight or law.initial,
            max_lag_s=settings.max_lag_s,
            max_connections=settings.max_connections or law.initial,
            adaptive=adaptive,
            inflight_pinned=settings.max_inflight is not None,
            connections_pinned=settings.max_connections is not None,
        )

    def admits(self, route_inflight: int) -> bool:
        """Whether a new request of a route with `route_inflight` in flight may start now."""
        return route_inflight < self.max_inflight and self.lag_s < self.max_lag_s

    def open_connections(self) -> int:
        return self.pool.open_count() if self.pool is not None else self.inflight

    def observe(
        self, now_s: float, lag_s: float, queue_delay_s: float, cpu_s: float | None = None
    ) -> None:
        """A measurement of the event loop (loop_lag.py): the lag for the hard bound, the
        queueing delay (and the CPU time the process has used) for the adaptive bounds, which
        are updated and applied here."""
        self.lag_s = lag_s
        open_now = self.open_connections()
        if self.adaptive is not None:
            limit = self.adaptive.update(
                Measurement(
                    now_s,
                    self.completed,
                    queue_delay_s,
                    open_now,
                    turned_away=self.shed + self.refused,
                    cpu_s=cpu_s,
                )
            )
            if not self.connections_pinned:
                self.max_connections = limit
                if self.pool is not None:
                    self.pool.retire_beyond(limit)
            if not self.inflight_pinned:
                self.max_inflight = limit
            metrics.adaptive_queue_delay.set(self.adaptive.delay_s)
        metrics.connections_open.set(open_now)
        metrics.adaptive_max_connections.set(self.max_connections)
        metrics.adaptive_max_inflight.set(self.max_inflight)

    @property
    def saturated(self) -> bool:
        return (
            self.inflight >= SATURATED_SHARE * self.max_inflight
            or self.lag_s >= SATURATED_SHARE * self.max_lag_s
            or self.open_connections() >= SATURATED_SHARE * self.max_connections
        )

    def readiness(self) -> dict[str, object]:
        """What /readyz shows besides its status: the bounds now and how close to them."""
        return {
            "connections": self.open_connections(),
            "max_connections": self.max_connections,
            "inflight": self.inflight,
            "max_inflight": self.max_inflight,
            "loop_lag_s": round(self.lag_s, 4),
            "adaptive": self.adaptive is not None,
            **({"queue_delay_s": round(self.adaptive.delay_s, 4)} if self.adaptive else {}),
        }
