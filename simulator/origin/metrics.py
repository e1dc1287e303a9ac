"""The sample origin's Prometheus metrics (names agreed with the monitoring dashboards).

Each app gets its own registry, so several origins can live in one process (tests, demo).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from simulator.origin.config import STEPS

STATUS_CLASSES = ("2xx", "4xx", "5xx")
REJECT_REASONS = ("overload", "timeout", "invalid_token")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OriginMetrics:
    def __init__(self, capacity: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.inflight = Gauge(
            "gelombang_origin_inflight",
            "Requests being served by the origin's workers now.",
            registry=self.registry,
        )
        self.capacity = Gauge(
            "gelombang_origin_capacity",
            "Configured number of requests the origin serves at once.",
            registry=self.registry,
        )
        self.capacity.set(capacity)
        self.requests = Counter(
            "gelombang_origin_requests_total",
            "Registration requests answered, by step and status class.",
            ["step", "status_class"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "gelombang_origin_request_duration_seconds",
            "Time from request arrival to answer, waiting for a worker included.",
            ["step"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "gelombang_origin_rejected_total",
            "Requests refused without being served, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.completed = Counter(
            "gelombang_origin_registrations_completed_total",
            "Registrations that reached the end of the flow (joined the wave).",
            registry=self.registry,
        )
        self.protection = Gauge(
            "gelombang_origin_protection",
            '1 with the wave whose admission tokens the origin requires; 0 (wave "") when '
            "it admits anyone (the no-waiting-room run).",
            ["wave"],
            registry=self.registry,
        )
        # Pre-initialise every labelled series so dashboards and rates see zeros, not gaps.
        for step in STEPS:
            self.duration.labels(step=step)
            for status_class in STATUS_CLASSES:
                self.requests.labels(step=step, status_class=status_class)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)

    def protects(self, wave: str | None) -> None:
        self.protection.labels(wave=wave or "").set(1 if wave is not None else 0)

    def observe(self, step: str, status: int, seconds: float) -> None:
        status_class = f"{min(max(status // 100, 2), 5)}xx"
        if status_class == "3xx":
            status_class = "2xx"
        self.requests.labels(step=step, status_class=status_class).inc()
        self.duration.labels(step=step).observe(seconds)
