"""What each step of a step-up stress run achieved, and the first step where the service broke.

Pure (no Locust import): `shapes.StepUpShape` measures each step from Locust's aggregated stats
and appends a `StepRecord` to `RECORDS`; `checks.py` prints them with the verdict and writes them
into the verdict file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepRecord:
    step: int
    users: int
    seconds: float
    requests: int
    failures: int
    p95_ms: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class BreakLimits:
    max_fail_ratio: float = 0.01
    max_p95_ms: float = 500.0


def broken(record: StepRecord, limits: BreakLimits) -> str | None:
    """Why this step counts as broken, or None."""
    if record.fail_ratio > limits.max_fail_ratio:
        return f"{record.fail_ratio:.1%} of requests failed (> {limits.max_fail_ratio:.1%})"
    if record.p95_ms is not None and record.p95_ms > limits.max_p95_ms:
        return f"p95 {record.p95_ms:.0f} ms (> {limits.max_p95_ms:.0f} ms)"
    return None


def breaking_point(records: list[StepRecord], limits: BreakLimits) -> tuple[StepRecord, str] | None:
    for record in records:
        reason = broken(record, limits)
        if reason:
            return record, reason
    return None


def render_steps(records: list[StepRecord], limits: BreakLimits) -> str:
    lines = ["Step-up stress:", "  step  users     req/s   failed    p95 ms"]
    for r in records:
        p95 = "-" if r.p95_ms is None else f"{r.p95_ms:.0f}"
        lines.append(f"  {r.step:>4}  {r.users:>5}  {r.rps:>8.1f}  {r.fail_ratio:>7.1%}  {p95:>8}")
    found = breaking_point(records, limits)
    if found:
        record, reason = found
        lines.append(f"  => breaking point at step {record.step} ({record.users} users): {reason}")
        before = next((r for r in records if r.step == record.step - 1), None)
        if before:
            lines.append(
                f"     last step within limits: {before.users} users, {before.rps:.1f} req/s"
            )
    else:
        lines.append("  => no step broke the limits: raise --step-max-users")
    return "\n".join(lines)


RECORDS: list[StepRecord] = []
