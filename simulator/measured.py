"""What one queue process and Redis were measured to do, as `loadtests/RESULTS.md` reports it
("Final figures"): the planner sizes the waiting room with these numbers, and
tests/unit/test_sim_plan.py keeps them equal to that file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    status_per_process_s: float
    """Status polls per second one process answers at saturation (100 000 waiting)."""
    join_per_process_s: float
    """Joins per second one process takes at saturation (unique registrants)."""
    half_saturation_status_s: float
    """The status load at which p99 was measured (`p99_ms`): the planner keeps each
    process at or below this share of saturation."""
    p99_ms: float
    redis_bytes_per_ticket: float
    """Redis memory per waiting ticket at 10 M waiting."""
    requests_per_script_call: float
    """Joins per join-script call (the coalescer's batch) under load."""
    redis_us_per_join: float
    """Redis CPU per join, in 32-join script calls (`loadtests.bench ceiling`)."""
    redis_us_per_deadline: float
    """Redis CPU per poll deadline written by a seen-buffer flush of 500."""
    redis_us_per_admission_step: float
    """Redis CPU per admission step of a wave with a standing line."""

    @property
    def headroom(self) -> float:
        return self.half_saturation_status_s / self.status_per_process_s


RESULTS = Measured(
    status_per_process_s=21_155,
    join_per_process_s=13_713,
    half_saturation_status_s=7_420,
    p99_ms=10.4,
    redis_bytes_per_ticket=103,
    requests_per_script_call=31.6,
    redis_us_per_join=53.0,
    redis_us_per_deadline=5.5,
    redis_us_per_admission_step=164,
)
