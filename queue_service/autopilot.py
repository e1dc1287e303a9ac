"""The autopilot: admission that follows the origin's health. Its configuration (one
`autopilot` object per wave) and its control law, with no I/O and no clock of its own: the
loop that reads Prometheus and applies decisions atomically is autopilot_loop.py; the offline
model runs this same law.

What it controls. The admitted concurrency `target` (the wave's `max_active`), and the admission
rate that follows from it by Little's law, `admit_rate = target / S_pace`, with

    S_pace = min(S, S_plan)      S the measured session time (the mean time a slot stays
                                 taken), S_plan the wave's planned session (its estimate)

Why not S alone: S is an average over the sessions that ended, so after an overload it still
remembers the sessions that waited on timeouts (the model: 14 s, against 2.5 s once the origin
is healthy again, for minutes). At target / S only S_true / S of the target is ever busy
(2.5 / 14 = 18%), never the 90% growth needs, and the law would sit at a small target with the
origin idle. Pacing by at most S_plan lets the slots refill within a planned session; it is
only headroom on the rate, never on the concurrency: `max_active` = target still bounds what is
admitted at once, and concurrency is what the law controls. (A planned session far below the
real one only means freed slots are refilled at once.)

Concurrency, not rate, is what an origin's health depends on, and a waiting room's feedback
arrives late: people admitted now reach the slow steps of the registration (the KTP upload,
the OTP) seconds to minutes from now, and the signals are rates over a window W (the largest
range selector of the two queries, `[1m]` -> 60 s, or `signal_window_s`), scraped a little
after the fact. A change shows alone in the signals only W + W / 4 after it (`settle_s`:
Prometheus's rule of thumb is a range of at least four scrapes, so the newest sample may be a
quarter of the window old). So:

    every interval, from the latest signals L (latency, seconds), E (error ratio, 0-1) and
    U = active / target (how much of the concurrency is really used), with W' = 1.25 W:

    missing or unreadable signal   -> hold the last target (never open the gates), stale
    manual change within hold_s    -> hold (the operator's values stand)
    L > L* or E > E*               -> target *= 0.7 (0.5 when L > 2 L* or E > 4 E*),
      (breach)                        at most once per max(interval, S / 2, W'): the sessions
                                      already admitted are still on their way to the origin,
                                      and the window still holds the breach the cut answered.
                                      A cut that follows the last one with no increase
                                      between, within T_up + interval of it, remembers the
                                      target before it: R (recover_to); any other cut, R = 0
    L < 0.8 L* and E < 0.5 E*      -> target += max(1, k * target), k = 0.25 until the first
      and U >= 0.9 and people wait    breach (slow start) and while below R (not beyond R),
      (healthy, and it is used)       else 0.1; never within T_up = max(2 intervals, S, W')
                                      of a decrease, nor within max(S / 2, W') of the last
                                      increase (it must have shown)
    otherwise                      -> hold (the band between is hysteresis)

    target is clamped to [min_active, max_active] after every step.

Why it neither oscillates nor creeps nor sticks:
- Oscillation comes from reacting again before the last reaction has shown. A decrease is
  followed by no further decrease for half a session and no increase for a whole one (the
  time the admitted sessions take to drain), an increase by no other for half a session, and
  none of them before the signal window (and its scrape) has passed since, so no reaction
  answers a signal that still shows the state before the last one: with a 10 s window read
  every 3 s, cutting at every interval took 35 to 11 in four intervals, and the default `[1m]`
  read every 15 s cut to the floor. A cut is not held back by an earlier increase: if the
  increase caused the breach, the cut is the answer. The band 0.8 L*..L* / 0.5 E*..E* holds.
  The increase is additive-proportional (10%), the decrease multiplicative (30%): AIMD, the
  law TCP and Netflix's AIMDLimit use, which converges to a fair share and keeps its
  oscillation within one decrease of the capacity.
- A second cut that answered a stale signal. The spacing above is a floor, not a proof: after
  an overload the admitted sessions drain slower than half a session (they wait on the
  origin's timeouts), so the signal after a cut may still show the backlog that cut dealt
  with, and the law cuts again. Measured on the benchmark (loadtests/RESULTS.md): 42 -> 21 ->
  10 sessions after the origin halved (it then ran healthy at 18-26), 150 -> 105 -> 52 -> 26
  -> 13 at the opening (healthy up to 40); climbing back by +1 a step (10% of a small target,
  rounded down) took about a minute. TCP, once a timeout has cut its window, climbs back by
  slow start up to a threshold and only then additively; here the threshold is R, the target
  before the cut in a row: the law returns there at +25% a step, then probes at +10%
  (measured: 10 -> 20 in 18 s, not 60). It cannot cycle: if R was too much, the breach
  there cuts again, and that cut follows an increase, so it sets R = 0 and the law climbs
  from it additively. An operator's change sets R = 0 (their value is the new start).
- A baseline that creeps (Vegas, Gradient: a "no-load latency" learnt from the signal drifts up
  under sustained load, and with it the limit): there is no learnt baseline; the targets L* and
  E* are the operator's SLOs, absolute. S_plan is the operator's too, and caps the rate only.
- A floor that never recovers: an increase needs only a healthy origin and used concurrency;
  at the floor, with people waiting, the concurrency is used (the rate, paced by at most the
  planned session, refills it even while S still remembers the overload), so it climbs again
  as soon as the origin is healthy (at least +1 per max(S / 2, W'), in whole intervals;
  +10% once above 10).
  Healthy must be reachable: L* must sit far enough above what an idle origin's p95 reads. A
  quantile from a histogram is interpolated inside its bucket, so an idle origin reads inside
  the bucket its p95 falls in (the sample origin's buckets: about 0.87 s, in 0.5-1 s); with
  L* = 1 s the healthy line 0.8 s is below it and the law can only hold or cut. Keep 0.8 L*
  above the upper bound of that bucket (here L* >= 1.25 s).
- Opening the gates on no news: a missing signal holds. Growth needs the signals to say the
  origin is healthy AND the extra room to be used (U >= 0.9), so an origin that is idle
  because nobody is admitted never earns a higher limit it was never tested at.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from queue_service.errors import BadRequest

MODES = ("off", "advise", "on")
Mode = Literal["off", "advise", "on"]

DEFAULT_LATENCY_QUERY = (
    "histogram_quantile(0.95, sum by (le) "
    "(rate(gelombang_origin_request_duration_seconds_bucket[1m])))"
)
"""p95 of the origin's answers over the last minute (the sample origin and `origin_guard`'s
`OriginHealthMetrics` export it). `$wave` in a query is replaced by the wave's id."""
DEFAULT_ERROR_QUERY = (
    'sum(rate(gelombang_origin_requests_total{status_class="5xx"}[1m])) '
    "/ clamp_min(sum(rate(gelombang_origin_requests_total[1m])), 1e-9)"
)
"""Share of the origin's answers that were 5xx over the last minute (0 with no traffic)."""

DECREASE = 0.7
SEVERE_DECREASE = 0.5
SEVERE_LATENCY = 2.0
SEVERE_ERRORS = 4.0
SLOW_START_STEP = 0.25
INCREASE_STEP = 0.1
HEALTHY_LATENCY = 0.8
HEALTHY_ERRORS = 0.5
USED_SHARE = 0.9
MIN_RATE = 0.01
"""Admissions per second never set below this (a wave the autopilot runs keeps moving)."""
SCRAPE_LAG_SHARE = 0.25
"""The scrape's lag behind a query's window, as a share of the window (a range of at least
four scrapes: the last sample is at most a quarter of the window old)."""

_RANGE = re.compile(r"\[\s*((?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+)\s*(?::[^\]]*)?\]")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
           "y": 31536000.0}  # fmt: skip


def query_window_s(query: str) -> float:
    """The largest range selector of a PromQL query, in seconds (`[1m]` -> 60, `[1m30s]` ->
    90, a subquery's `[5m:30s]` -> 300); 0 when it has none (`vector(5)`, a recording rule:
    then set `signal_window_s`)."""
    return max(
        (
            sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(match.group(1)))
            for match in _RANGE.finditer(query)
        ),
        default=0.0,
    )


@dataclass(frozen=True)
class AutopilotConfig:
    mode: Mode = "off"
    prometheus_url: str = ""
    latency_query: str = DEFAULT_LATENCY_QUERY
    latency_target_s: float = 2.0
    error_query: str = DEFAULT_ERROR_QUERY
    error_target: float = 0.02
    min_active: int = 10
    max_active: int = 0
    """Upper bound of the admitted concurrency (required when mode is not off)."""
    interval_s: float = 15.0
    manual_hold_s: float = 600.0
    """After an operator changes max_active or admit_rate, the autopilot holds this long."""
    signal_window_s: float | None = None
    """How far back the signals look (seconds); None: the largest range selector of the two
    queries (`[1m]` -> 60), 0 when they have none (`signal_window`)."""

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def query(self, which: Literal["latency", "errors"], wave: str) -> str:
        text = self.latency_query if which == "latency" else self.error_query
        return text.replace("$wave", wave)

    @property
    def signal_window(self) -> float:
        """The signals' look-back: the override, else the queries' largest range."""
        if self.signal_window_s is not None:
            return self.signal_window_s
        return max(query_window_s(self.latency_query), query_window_s(self.error_query))

    @property
    def settle_s(self) -> float:
        """How long after a change the signals show only what followed it: the window, plus
        the scrape that lags it (a quarter of the window: Prometheus's rule of thumb is a
        range of at least four scrapes)."""
        return self.signal_window * (1 + SCRAPE_LAG_SHARE)

    def clamp(self, target: float) -> int:
        return int(min(self.max_active, max(self.min_active, round(target))))

    def public_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "prometheus_url": self.prometheus_url,
            "latency_query": self.latency_query,
            "latency_target_s": self.latency_target_s,
            "error_query": self.error_query,
            "error_target": self.error_target,
            "min_active": self.min_active,
            "max_active": self.max_active,
            "interval_s": self.interval_s,
            "manual_hold_s": self.manual_hold_s,
            "signal_window_s": self.signal_window_s,
        }


AUTOPILOT_FIELDS = frozenset(AutopilotConfig().public_dict())


def _invalid(message: str) -> BadRequest:
    return BadRequest(f"autopilot: {message}", code="invalid_wave")


def _positive(data: Mapping[str, Any], name: str, default: float, *, minimum: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"{name} must be a number")
    if value < minimum or value > 1e9:
        raise _invalid(f"{name} must be at least {minimum:g}")
    return float(value)


def _whole(data: Mapping[str, Any], name: str, default: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**9:
        raise _invalid(f"{name} must be a whole number >= 0")
    return value


def _query(data: Mapping[str, Any], name: str, default: str) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or not value.strip() or len(value) > 4000:
        raise _invalid(f"{name} must be a PromQL expression")
    return value


def parse_autopilot(value: Any, current: AutopilotConfig | None = None) -> AutopilotConfig:
    """Validate a full or partial `autopilot` object; fields not given keep `current`'s."""
    from urllib.parse import urlsplit

    if value is None:
        return current or AutopilotConfig()
    if not isinstance(value, Mapping):
        raise _invalid("must be an object")
    unknown = set(value) - AUTOPILOT_FIELDS
    if unknown:
        raise _invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    merged = {**(current or AutopilotConfig()).public_dict(), **value}
    mode = merged["mode"]
    if mode not in MODES:
        raise _invalid(f"mode must be one of {', '.join(MODES)}")
    url = merged["prometheus_url"]
    if not isinstance(url, str) or len(url) > 2048:
        raise _invalid("prometheus_url must be an http(s) URL")
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise _invalid("prometheus_url must be an http(s) URL")
    config = AutopilotConfig(
        mode=mode,
        prometheus_url=url.rstrip("/"),
        latency_query=_query(merged, "latency_query", DEFAULT_LATENCY_QUERY),
        latency_target_s=_positive(merged, "latency_target_s", 2.0, minimum=0.001),
        error_query=_query(merged, "error_query", DEFAULT_ERROR_QUERY),
        error_target=_positive(merged, "error_target", 0.02, minimum=0.0001),
        min_active=_whole(merged, "min_active", 10),
        max_active=_whole(merged, "max_active", 0),
        interval_s=_positive(merged, "interval_s", 15.0, minimum=1.0),
        manual_hold_s=_positive(merged, "manual_hold_s", 600.0, minimum=0.0),
        signal_window_s=(
            None
            if merged.get("signal_window_s") is None
            else _positive(merged, "signal_window_s", 0.0, minimum=0.0)
        ),
    )
    if config.error_target >= 1:
        raise _invalid("error_target is a ratio below 1 (0.02 = 2%)")
    if config.enabled:
        if not config.prometheus_url:
            raise _invalid("prometheus_url is required when mode is advise or on")
        if config.max_active < 1:
            raise _invalid("max_active (the upper bound of admitted sessions) is required")
        if config.min_active < 1 or config.min_active > config.max_active:
            raise _invalid("min_active must be at least 1 and at most max_active")
    return config


# -- the law -----------------------------------------------------------------------------------

Action = Literal["increase", "decrease", "hold", "stale", "manual_hold"]


@dataclass(frozen=True)
class Signals:
    """What the origin's health looked like at one read (None: missing or unreadable)."""

    latency_s: float | None
    error_ratio: float | None

    @property
    def readable(self) -> bool:
        return self.latency_s is not None and self.error_ratio is not None


@dataclass(frozen=True)
class Load:
    """What the wave looked like at the same time."""

    active: int
    waiting: int
    session_s: float
    """Measured mean time a slot stays taken (the prior until sessions have ended)."""
    planned_session_s: float | None = None
    """The wave's planned session (its session estimate): caps the session time the rate is
    derived from (`pacing_session_s`). The measured one lags by minutes after an overload
    (it still averages the sessions that waited on timeouts); a rate from it starves the
    target, whose concurrency is then never all used, so the law could not raise it."""


@dataclass(frozen=True)
class ControllerState:
    """What the law remembers between decisions (kept in Redis, one per wave)."""

    target: int
    last_decrease_at: float = -math.inf
    last_increase_at: float = -math.inf
    breached: bool = False
    """A breach has been seen: slow start is over."""
    hold_until: float = -math.inf
    recover_to: int = 0
    """After a cut that followed another one with no increase between, the target before it:
    the law climbs back there at the slow-start pace (0: no such cut since the last one)."""


@dataclass(frozen=True)
class Decision:
    action: Action
    target: int
    admit_rate: float
    reason: str
    state: ControllerState = field(repr=False)


def start_target(config: AutopilotConfig, configured_max_active: int) -> int:
    """Where a wave starts: its configured max_active (the operator's guess), within bounds;
    the floor when it had no limit (growth from there is earned, not assumed)."""
    return config.clamp(configured_max_active if configured_max_active > 0 else config.min_active)


def rate_for(target: int, session_s: float) -> float:
    """Little's law: the admissions per second that keep `target` sessions busy."""
    return max(MIN_RATE, target / max(session_s, 0.001))


def pacing_session_s(load: Load) -> float:
    """The session time the rate is derived from: the measured one, at most the planned one."""
    return max(min(load.session_s, load.planned_session_s or math.inf), 0.001)


def decide(
    config: AutopilotConfig,
    state: ControllerState,
    signals: Signals,
    load: Load,
    now: float,
) -> Decision:
    """The next target and rate (see the module docstring for the law)."""
    target = config.clamp(state.target)
    session_s = max(load.session_s, 0.001)
    pacing_s = pacing_session_s(load)
    settle_s = config.settle_s

    def outcome(action: Action, new_target: int, reason: str, **changes: Any) -> Decision:
        new_state = replace(state, target=new_target, **changes)
        return Decision(action, new_target, rate_for(new_target, pacing_s), reason, new_state)

    if now < state.hold_until:
        return outcome("manual_hold", target, "an operator's change stands")
    if not signals.readable:
        return outcome("stale", target, "a health signal is missing: holding the last target")
    latency, errors = signals.latency_s or 0.0, signals.error_ratio or 0.0
    l_target, e_target = config.latency_target_s, config.error_target
    if latency > l_target or errors > e_target:
        if now - state.last_decrease_at < max(config.interval_s, session_s / 2, settle_s):
            return outcome("hold", target, "breach, but the last decrease has not shown yet")
        severe = latency > SEVERE_LATENCY * l_target or errors > SEVERE_ERRORS * e_target
        chained = state.last_decrease_at > state.last_increase_at and (
            now - state.last_decrease_at <= _increase_wait_s(config, session_s) + config.interval_s
        )
        new_target = config.clamp(math.floor(target * (SEVERE_DECREASE if severe else DECREASE)))
        reason = (
            f"origin over target (p95 {latency:.2f} s vs {l_target:g} s, "
            f"errors {errors:.1%} vs {e_target:.1%})"
        )
        return outcome(
            "decrease", new_target, reason, last_decrease_at=now, breached=True,
            recover_to=target if chained else 0,
        )  # fmt: skip
    healthy = latency < HEALTHY_LATENCY * l_target and errors < HEALTHY_ERRORS * e_target
    used = load.active >= USED_SHARE * target and load.waiting > 0
    if not healthy:
        return outcome("hold", target, "origin near its targets (hysteresis band)")
    if not used:
        return outcome("hold", target, "origin healthy, but the concurrency is not all used")
    if now - state.last_decrease_at < _increase_wait_s(config, session_s):
        return outcome("hold", target, "healthy again; waiting out a session and the window")
    if now - state.last_increase_at < max(session_s / 2, settle_s):
        return outcome("hold", target, "healthy; the last increase has not shown yet")
    reason = (
        f"origin healthy (p95 {latency:.2f} s, errors {errors:.1%}) and {load.active} of "
        f"{target} sessions used"
    )
    recovering = target < state.recover_to
    step = SLOW_START_STEP if recovering or not state.breached else INCREASE_STEP
    new_target = target + max(1, math.floor(target * step))
    if recovering:
        new_target = min(new_target, state.recover_to)
        reason += f"; back towards {state.recover_to}, the target before a second cut in a row"
    new_target = config.clamp(new_target)
    if new_target == target:
        return outcome("hold", target, "healthy, at max_active")
    return outcome("increase", new_target, reason, last_increase_at=now)


def _increase_wait_s(config: AutopilotConfig, session_s: float) -> float:
    """No increase within this long of a decrease: the admitted sessions drain (a session)
    and the window forgets the breach, in whole intervals (at least two)."""
    return max(2 * config.interval_s, session_s, config.settle_s)
