"""Settings of the sample origin: its capacity, service times and registration rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

# Median service time of each registration step at no load, in seconds. The KTP step is the
# slowest: it stores a photo and asks the (rate-limited) ministry NIK service.
DEFAULT_SERVICE_S: dict[str, float] = {
    "account": 0.04,
    "ktp": 0.12,
    "otp_send": 0.03,
    "otp_verify": 0.02,
    "join": 0.03,
    "other": 0.01,
}

STEPS = tuple(DEFAULT_SERVICE_S)


@dataclass(frozen=True)
class OriginConfig:
    capacity: int = 50
    """Requests served at once (worker pool). In-flight never exceeds it."""
    backlog: int = 200
    """Requests allowed to wait for a worker; beyond that the origin answers 503 at once."""
    queue_timeout_s: float = 2.0
    """A request that waited this long for a worker gets 504 (the gateway gave up)."""
    service_s: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SERVICE_S))
    service_sigma: float = 0.5
    """Log-normal spread of service times."""
    slowdown_per_waiter: float = 1.5
    """Contention: service time is multiplied by 1 + this × (waiting / capacity), so a deep
    backlog (locks, connection pools, GC) slows every worker down, up to `max_slowdown`."""
    max_slowdown: float = 8.0
    max_upload_bytes: int = 2 * 1024 * 1024
    min_age: int = 18
    otp_max_sends: int = 6
    """The first send plus 5 resends (Prakerja); the next one locks the account out."""
    otp_lockout_s: float = 7200.0
    otp_max_verify_attempts: int = 5
    wave: str | None = None
    """The wave the origin registers people for; with protection on, tokens must be for it."""
    today: date | None = None
    """The date ages are computed against (None = today)."""
    seed: int | None = None
    capacity_schedule: tuple[tuple[float, int], ...] = ()
    """(seconds after start, capacity) steps: the origin loses (or regains) capacity mid-run,
    as a real one does when a dependency slows down."""
    admin_token: str | None = None
    """With a token, `PUT /api/v1/admin/capacity` changes the capacity live (Bearer)."""

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        if self.backlog < 0:
            raise ValueError("backlog must not be negative")
        if self.queue_timeout_s <= 0:
            raise ValueError("queue_timeout_s must be positive")
        unknown = set(self.service_s) - set(STEPS)
        if unknown:
            raise ValueError(f"unknown steps in service_s: {sorted(unknown)}")
        for at_s, capacity in self.capacity_schedule:
            if at_s < 0 or capacity < 1:
                raise ValueError("capacity_schedule: (seconds >= 0, capacity >= 1) steps")

    def median_service_s(self, step: str) -> float:
        return self.service_s.get(step, DEFAULT_SERVICE_S[step])
