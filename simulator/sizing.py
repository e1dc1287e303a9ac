"""What a planned wave asks of the whole system, from one full-size model run: the queue tier
(status polls and joins per second, processes at the measured per-process throughput), Redis
(commands per second, memory), the origin in its own units, the people who will never get a
place, and the `gelombang wave put` command that applies the plan.

Load figures come from the service's own functions and measured numbers: polling from
`pacing.total_poll_rate` inside the model, per-process throughput and Redis bytes per ticket
from `simulator.measured` (loadtests/RESULTS.md).
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from simulator import sessions
from simulator.flow import STEPS
from simulator.measured import RESULTS, Measured
from simulator.records import RunRecord
from simulator.scenario import Scenario
from simulator.wave_definition import wave_definition

ADMISSION_STEPS_PER_S = 20
"""Every process runs the admission step for every live wave each 50 ms."""
SPARE_PROCESSES = 1
"""One process may fail (or be restarted) at the peak without the rest saturating."""
WIB = timezone(timedelta(hours=7))
PLACEHOLDER_ORIGIN = "https://registration.example/daftar"
PLACEHOLDER_JWKS = "https://registration.example/.well-known/enqueue-jwks.json"
"""Stand-ins (a reserved domain) for what only the SRE knows: the command is complete and
accepted by the service, and says which values to replace."""


@dataclass(frozen=True)
class Schedule:
    """When the planned wave opens and closes, and where admitted people go."""

    opens_at: datetime
    closes_at: datetime
    origin_url: str = PLACEHOLDER_ORIGIN
    enqueue_jwks_url: str = PLACEHOLDER_JWKS


def next_opening(scenario: Scenario, now: datetime) -> Schedule:
    """The scenario's opening time of day (WIB) on the first day its pre-queue is still
    ahead of `now`, and its close as long after as the scenario's; placeholders for URLs."""
    clock = scenario.clock
    hour = (clock.start_hour + clock.opens_at_s / 3600.0) % 24
    day = now.astimezone(WIB).replace(hour=0, minute=0, second=0, microsecond=0)
    opens = day + timedelta(hours=hour)
    while opens - timedelta(seconds=scenario.wave.prequeue_s) <= now:
        opens += timedelta(days=1)
    return Schedule(opens, opens + timedelta(seconds=clock.closes_at_s - clock.opens_at_s))


@dataclass(frozen=True)
class Sizing:
    status_polls_per_s: float
    joins_per_s: float
    processes: int
    redis_core_share: float
    """Share of one Redis core the wave's master spends at the peak (a wave lives on one)."""
    redis_share_by_work: dict[str, float]
    redis_memory_bytes: float
    peak_sessions: int
    origin_requests_per_s: float
    origin_requests_in_flight: float
    origin_capacity: int
    arrived: int
    got_a_place: int
    refused: int
    gave_up: int
    mean_slot_hold_s: float
    command: str
    placeholders: tuple[str, ...] = ()
    """Settings in the command that stand in for what only the SRE knows."""


def mean_slot_hold_s(record: RunRecord) -> float:
    """Slot-seconds taken per admission while the wave ran (ghosts' lapsing slots included):
    the `expected_session_s` the service's ETA prior needs."""
    admitted = record.totals.queue_admitted or record.totals.admitted
    if not admitted:
        return 0.0
    return sum(record.series.active) * record.series.step_s / admitted


def size(
    scenario: Scenario, record: RunRecord, admit_rate: float, max_active: int,
    measured: Measured = RESULTS, schedule: Schedule | None = None,
) -> Sizing:  # fmt: skip
    """`schedule`: the wave's times and URLs for the command (default: the scenario's next
    opening, placeholder URLs)."""
    totals, origin, wave = record.totals, scenario.origin, scenario.wave
    polls = totals.peak_status_polls_per_s or 0.0
    joins = totals.peak_joins_per_s or 0.0
    load = polls / measured.status_per_process_s + joins / measured.join_per_process_s
    processes = max(1, math.ceil(load / measured.headroom)) + SPARE_PROCESSES
    redis_us = {  # Redis CPU per second, from the measured cost of each script call
        "joins": joins * measured.redis_us_per_join,
        # one poll deadline written per poll (seen_buffer, lua/seen.lua)
        "poll deadlines": polls * measured.redis_us_per_deadline,
        "admission": processes * ADMISSION_STEPS_PER_S * measured.redis_us_per_admission_step,
    }
    tickets = totals.joined + totals.prequeue
    peak_sessions = max(record.series.active, default=0)
    mean_session = sessions.mean_session_s(origin)
    requests_per_s = peak_sessions * origin.requests_per_session / mean_session
    per_request_s = sessions.flow_service_s(origin) / len(STEPS)
    got = totals.admitted
    refused = totals.gave_up.get("rejected", 0)
    hold = mean_slot_hold_s(record)
    when = schedule or next_opening(scenario, datetime.now(WIB))
    definition = wave_definition(
        scenario,
        opens_at=when.opens_at.isoformat(),
        closes_at=when.closes_at.isoformat(),
        origin_url=when.origin_url,
        enqueue_jwks_url=when.enqueue_jwks_url,
        admit_rate=admit_rate,
        max_active=max_active,
        expected_session_s=hold,
    )
    settings = {name: command_value(name, value) for name, value in definition.items()}
    command = f"gelombang wave put {wave.id} " + " ".join(
        f"--set {shlex.quote(f'{name}={value}')}" for name, value in settings.items()
    )
    placeholders = [
        name for name, value in settings.items() if value in (PLACEHOLDER_ORIGIN, PLACEHOLDER_JWKS)
    ]
    return Sizing(
        status_polls_per_s=polls,
        joins_per_s=joins,
        processes=processes,
        redis_core_share=sum(redis_us.values()) / 1e6,
        redis_share_by_work={work: us / 1e6 for work, us in redis_us.items()},
        redis_memory_bytes=tickets * measured.redis_bytes_per_ticket,
        peak_sessions=peak_sessions,
        origin_requests_per_s=requests_per_s,
        origin_requests_in_flight=requests_per_s * per_request_s,
        origin_capacity=origin.capacity,
        arrived=totals.arrived,
        got_a_place=got,
        refused=refused,
        gave_up=totals.arrived - got - refused,
        mean_slot_hold_s=hold,
        command=command,
        placeholders=tuple(placeholders),
    )


SHOWN_DIGITS = {"admit_rate": ".3g", "admit_burst": ".3g", "expected_session_s": ".1f"}
"""How the command shows a planned figure (the rest as `:g`)."""


def command_value(name: str, value: object) -> str:
    """A setting as `gelombang wave put --set` takes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, SHOWN_DIGITS.get(name, "g"))
    if isinstance(value, dict):  # an object field (`autopilot`): JSON, as --set takes it
        return json.dumps(value)
    return str(value)


def _shares(by_work: dict[str, float]) -> str:
    return ", ".join(f"{work} {share:.0%}" for work, share in by_work.items())


def render(s: Sizing, measured: Measured = RESULTS) -> str:
    share = 100.0 * s.origin_requests_in_flight / s.origin_capacity if s.origin_capacity else 0.0
    never = s.arrived - s.got_a_place
    lines = [
        "What the wave asks of the system (full-size model run):",
        f"  queue tier   peak {s.status_polls_per_s:,.0f} status polls/s and "
        f"{s.joins_per_s:,.0f} joins/s -> {s.processes} processes "
        f"(at {measured.headroom:.0%} of the measured {measured.status_per_process_s:,.0f} "
        f"polls/s and {measured.join_per_process_s:,.0f} joins/s per process, where p99 was "
        f"{measured.p99_ms:g} ms; {SPARE_PROCESSES} spare)",
        f"  Redis        {s.redis_core_share:.0%} of one core on the wave's master at the "
        f"peak ({_shares(s.redis_share_by_work)}; measured cost per call); "
        f"{s.redis_memory_bytes / 2**30:,.2f} GiB for the wave's tickets "
        f"({measured.redis_bytes_per_ticket:g} B each)",
        f"  origin       peak {s.peak_sessions:,} sessions in progress, "
        f"{s.origin_requests_per_s:,.0f} requests/s, {s.origin_requests_in_flight:,.0f} "
        f"requests in flight ({share:.0f}% of capacity {s.origin_capacity:,})",
        f"  people       {s.arrived:,} arrived; {s.got_a_place:,} got a place; "
        f"{never:,} never will ({s.refused:,} refused or told the wave closed/full, "
        f"{s.gave_up:,} gave up waiting or left)",
        f"  ETA prior    a slot is held {s.mean_slot_hold_s:,.1f} s on average (ghost tickets "
        "included): expected_session_s",
        "",
        "Apply it (creates the wave, or changes it: a new wave needs its times and origin):",
        f"  {s.command}",
    ]
    if s.placeholders:
        lines.append(
            f"  ({', '.join(s.placeholders)}: placeholders on registration.example; give "
            "--origin-url / --enqueue-jwks-url, or edit them, before applying. opens_at is the "
            "scenario's next opening: --opens-at sets the real one)"
        )
    return "\n".join(lines)
