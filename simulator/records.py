"""The run record: what one wave run produced, in a form the report consumes.

Both the live driver (`gelombang simulate`, `gelombang demo`) and the offline model
(`gelombang plan`) produce a `RunRecord`; `simulator.report` reads one or two of them.

Interface:

- `RunRecord(meta, series, registrants, totals)` with `to_json() -> bytes`,
  `RunRecord.from_json(data)`, `save(path)` and `RunRecord.load(path)`.
- `RunRecord.build(meta, series, registrants)` computes `totals` from the outcomes (use it
  when every registrant is recorded, as the live driver does).
- `TimeSeries.empty(duration_s, step_s=1.0)` then, while running:
  `series.add("arrivals", t, 1)` to count an event in the bin of time `t`, and
  `series.peak("origin_inflight", t, value)` / `series.set("queue_length", t, value)` for
  gauges. Times are seconds since the start of the run (t = 0); events after the end are
  counted in the last bin.

Times everywhere are seconds since the start of the run (`t = 0`); the wave opens at
`meta.opens_at_s`. A registrant that never reached a stage has `None` for that stage's time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from simulator.callback_stats import callback_totals

MODES = ("direct", "queued")
# What people read: every human-facing label names a run by its title, never by its mode.
MODE_TITLES = {"direct": "without Gelombang", "queued": "through Gelombang"}
GIVE_UP_REASONS = ("balked", "reneged", "errors", "abandoned", "rejected", "run_ended")


@dataclass
class RegistrantOutcome:
    """What happened to one registrant in one run."""

    index: int  # index in the population (`Population(seed, size)[index]`)
    is_bot: bool  # automated client (scripted or joki account)
    arrival_t: float  # first attempt: first join call (queued) or first origin request (direct)
    joined_t: float | None = None  # join accepted by the queue (queued mode only)
    prequeue: bool = False  # joined during the pre-queue window (before `opens_at_s`)
    position_at_join: int | None = None  # `position` in the join response
    eta_at_join_s: float | None = None  # `eta_s` in the join response
    admitted_t: float | None = None  # admitted (queued) / first origin request served (direct)
    noticed_t: float | None = None  # queued: the poll that brought the admission token
    first_served_t: float | None = None
    """The first request the origin served this registrant (both modes; None in the model,
    which does not time single requests)."""
    ticket: int | None = None
    """queued, live: the queue's ticket number (join order), from the admission token."""
    admitted_iat: int | None = None
    """queued, live: the whole second the queue signed into the admission token (`iat`,
    Unix seconds): its own record of when it admitted, on its own clock."""
    reached_t: float | None = None
    """queued: when admission reached this registrant's (latest) ticket, admitted or skipped
    because its holder had gone: the wait the ETA at join promised, known for everyone."""
    completed_t: float | None = None  # registration flow finished at the origin
    gave_up_t: float | None = None  # stopped trying (see `gave_up_reason`)
    gave_up_reason: str | None = None  # one of GIVE_UP_REASONS
    errors: int = 0  # origin 5xx responses and timeouts seen
    rate_limited: int = 0  # 429 responses seen (queue or origin)
    requests: int = 0  # HTTP requests sent, polls included
    # call-backs (issue 24): None unless this registrant opted in
    callback_channel: str | None = None  # the contact kind they gave
    opted_in_t: float | None = None  # left the page to be called back
    notified_t: float | None = None  # the first message reached them (near, or their turn)
    called_t: float | None = None  # the line reached them while away (no slot taken)
    returned_t: float | None = None  # came back by the return link
    returned_in_time: bool | None = None  # ... while their place held

    @property
    def wait_s(self) -> float | None:
        """Time from joining (or arriving, in direct mode) to admission."""
        if self.admitted_t is None:
            return None
        start = self.joined_t if self.joined_t is not None else self.arrival_t
        return self.admitted_t - start


@dataclass
class TimeSeries:
    """Per-bin series (bin `k` covers `[k*step_s, (k+1)*step_s)`), all the same length.

    Counters (events in the bin): arrivals, admissions, completions, origin_errors,
    origin_timeouts, rate_limited, gave_up. Gauges (value in the bin): queue_length
    (waiting + pre-queue tickets, last value), admit_rate_target (configured admissions/s),
    origin_inflight (peak concurrent origin requests), origin_capacity (configured concurrent
    capacity), active (admitted sessions not yet completed, last value).
    """

    step_s: float
    arrivals: list[int]
    admissions: list[int]
    completions: list[int]
    origin_errors: list[int]
    origin_timeouts: list[int]
    rate_limited: list[int]
    gave_up: list[int]
    queue_length: list[int]
    admit_rate_target: list[float]
    origin_inflight: list[int]
    origin_capacity: list[int]
    active: list[int]
    messages: dict[str, list[int]] = field(default_factory=dict)
    """Call-back messages sent in the bin, by channel (sms, whatsapp, email, webpush)."""

    COUNTERS = (
        "arrivals",
        "admissions",
        "completions",
        "origin_errors",
        "origin_timeouts",
        "rate_limited",
        "gave_up",
    )
    GAUGES = ("queue_length", "admit_rate_target", "origin_inflight", "origin_capacity", "active")

    @classmethod
    def empty(cls, duration_s: float, step_s: float = 1.0) -> TimeSeries:
        if step_s <= 0 or duration_s <= 0:
            raise ValueError("duration_s and step_s must be > 0")
        n = max(1, math.ceil(duration_s / step_s))
        values: dict[str, Any] = {name: [0] * n for name in cls.COUNTERS}
        for name in cls.GAUGES:
            values[name] = [0.0] * n if name == "admit_rate_target" else [0] * n
        return cls(step_s=step_s, **values)

    def __len__(self) -> int:
        return len(self.arrivals)

    def bin(self, t: float) -> int:
        return min(len(self) - 1, max(0, int(t // self.step_s)))

    def times(self) -> list[float]:
        return [k * self.step_s for k in range(len(self))]

    def add(self, name: str, t: float, n: int = 1) -> None:
        getattr(self, name)[self.bin(t)] += n

    def set(self, name: str, t: float, value: float) -> None:
        getattr(self, name)[self.bin(t)] = value

    def peak(self, name: str, t: float, value: float) -> None:
        values = getattr(self, name)
        k = self.bin(t)
        if value > values[k]:
            values[k] = value


@dataclass
class RunMeta:
    """Which run this was and under which settings."""

    mode: str  # "direct" (straight at the origin) or "queued" (through Gelombang)
    scenario: str  # scenario name
    seed: int
    source: str  # "live" (the driver) or "model" (the offline model)
    population: int  # registrants in the run
    duration_s: float  # length of the run
    opens_at_s: float  # when the wave opened, seconds since the start of the run
    prequeue_s: float  # pre-queue window before opening
    admit_rate: float | None = None  # admissions/s (queued); None in direct mode
    admit_burst: float | None = None  # admissions the bucket may release at once (queued)
    max_active: int | None = None  # concurrent admitted sessions allowed (0 = no limit)
    session_ttl_s: float | None = None  # an admitted session not completed is freed after this
    abandon_after_s: float | None = None  # a ticket not polled this long is skipped (queued)
    origin_capacity: int | None = None  # origin concurrent-request capacity
    quota: int | None = None  # registrations the wave accepts
    sample_every: int = 1  # registrants[] holds every k-th registrant (1 = all)
    started_at: str | None = None  # wall-clock start, ISO 8601 (live runs)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass
class RunTotals:
    """Counts over the whole run (all registrants, even when only a sample is recorded)."""

    arrived: int = 0
    joined: int = 0
    prequeue: int = 0
    admitted: int = 0
    completed: int = 0
    gave_up: dict[str, int] = field(default_factory=dict)  # by reason
    origin_errors: int = 0
    origin_timeouts: int = 0
    rate_limited: int = 0
    requests: int = 0
    peak_origin_inflight: int = 0
    peak_queue_length: int = 0
    peak_live_registrants: int | None = None  # most the live driver held at once (None: model)
    queue_admitted: int | None = None
    """Admissions the queue decided (its `admitted` counter), taken up or not; None when the
    run could not read it. `admitted` counts the people who took theirs up."""
    peak_status_polls_per_s: float | None = None
    """model: status requests per second at the busiest moment (pacing.total_poll_rate for
    polite holders, manual refreshers and bots on their own schedule, every tab)."""
    peak_joins_per_s: float | None = None
    """model: join requests per second in the busiest bin (first attempts, refused ones and
    returns)."""
    lapsed: int | None = None
    """Admissions never taken up: the holder had gone (a ghost ticket), the slot lapsed at the
    holder's poll deadline."""
    callbacks: dict[str, Any] | None = None
    """Call-backs (`simulator.callback_stats.CALLBACK_KEYS`, messages by channel); None when
    the run had none."""

    @classmethod
    def from_run(cls, series: TimeSeries, outcomes: list[RegistrantOutcome]) -> RunTotals:
        gave_up: dict[str, int] = {}
        for o in outcomes:
            if o.gave_up_reason is not None:
                gave_up[o.gave_up_reason] = gave_up.get(o.gave_up_reason, 0) + 1
        return cls(
            arrived=len(outcomes),
            joined=sum(o.joined_t is not None for o in outcomes),
            prequeue=sum(o.prequeue for o in outcomes),
            admitted=sum(o.admitted_t is not None for o in outcomes),
            completed=sum(o.completed_t is not None for o in outcomes),
            gave_up=gave_up,
            origin_errors=sum(series.origin_errors),
            origin_timeouts=sum(series.origin_timeouts),
            rate_limited=sum(series.rate_limited),
            requests=sum(o.requests for o in outcomes),
            peak_origin_inflight=max(series.origin_inflight, default=0),
            peak_queue_length=max(series.queue_length, default=0),
            callbacks=callback_totals(outcomes, series),
        )


@dataclass
class AutopilotStep:
    """One decision of the wave's autopilot (model runs; `queue_service.autopilot.decide`)."""

    t: float  # seconds since the start of the run
    action: str  # increase, decrease, hold, stale, manual_hold
    target: int  # the admitted concurrency decided (max_active when the mode is on)
    admit_rate: float  # target / session time (Little's law)
    latency_s: float | None  # the p95 it read (None: no requests to measure)
    error_ratio: float | None  # the 5xx share it read
    active: int
    waiting: int
    session_s: float  # the measured slot hold it used
    applied: bool  # mode on: written into the wave; advise: recorded only


@dataclass
class RunRecord:
    meta: RunMeta
    series: TimeSeries
    registrants: list[RegistrantOutcome]
    totals: RunTotals
    autopilot: list[AutopilotStep] = field(default_factory=list)
    """The autopilot's decisions, one per interval (empty without one)."""

    @classmethod
    def build(
        cls, meta: RunMeta, series: TimeSeries, registrants: list[RegistrantOutcome]
    ) -> RunRecord:
        return cls(meta, series, registrants, RunTotals.from_run(series, registrants))

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> RunRecord:
        raw = orjson.loads(data)
        try:
            return cls(
                meta=RunMeta(**raw["meta"]),
                series=TimeSeries(**raw["series"]),
                registrants=[RegistrantOutcome(**r) for r in raw["registrants"]],
                totals=RunTotals(**raw["totals"]),
                autopilot=[AutopilotStep(**a) for a in raw.get("autopilot", [])],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a Gelombang run record: {exc}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        return cls.from_json(Path(path).read_bytes())
