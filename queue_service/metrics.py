"""Every Prometheus metric the queue service exposes, defined once.

Names follow Prometheus conventions: one `gelombang_` prefix, base units, `_total` counters,
`_seconds` histograms, bounded labels only (wave, route, method, status class, rule, op) and
never a ticket or registrant. With `--workers N` the service runs prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR): counters and histograms add up across processes,
and gauges read from Redis (the same value in every process) keep the most recent sample.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

REGISTRY = CollectorRegistry(auto_describe=True)

# `*_created` series double the series count and nothing reads them; multiprocess mode never
# exports them, so this also makes one process and `--workers N` expose the same series.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Wave state, read from Redis by every process's admission loop (identical in each process).
WAVE_GAUGE_MODE: Final = "livemostrecent"

queue_waiting = Gauge(
    "gelombang_queue_waiting",
    "Tickets waiting in line after opening (not yet reached by admission).",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
queue_prequeue = Gauge(
    "gelombang_queue_prequeue",
    "Tickets in the pre-queue, to be shuffled at opening.",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
sessions_active = Gauge(
    "gelombang_sessions_active",
    "Admitted sessions alive now (not completed, not expired).",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
wave_max_active = Gauge(
    "gelombang_wave_max_active",
    "Configured limit of admitted sessions alive at once (0 = no limit).",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
wave_admit_rate = Gauge(
    "gelombang_wave_admit_rate",
    "Configured admissions per second.",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
wave_quota = Gauge(
    "gelombang_wave_quota",
    "Configured total admissions for the wave.",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
wave_admitted = Gauge(
    "gelombang_wave_admitted",
    "Admissions so far in the wave, as recorded in Redis (the quota counter).",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
wave_state = Gauge(
    "gelombang_wave_state",
    "1 for the wave's current state, 0 for the others.",
    ["wave", "state"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)

# Events, counted by the one process that decided them (they sum across processes).
admissions = Counter(
    "gelombang_admissions",
    "Tickets admitted.",
    ["wave"],
    registry=REGISTRY,
)
abandoned = Counter(
    "gelombang_abandoned",
    "Waiting tickets skipped by admission because their holder was gone.",
    ["wave"],
    registry=REGISTRY,
)
sessions_expired = Counter(
    "gelombang_sessions_expired",
    "Admitted sessions that ended by reaching session_ttl_s without completing.",
    ["wave"],
    registry=REGISTRY,
)
admission_tick_seconds = Histogram(
    "gelombang_admission_tick_seconds",
    "Time one tick of a process's admission loop took (every due wave stepped); above the "
    "admission interval the loop is falling behind.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
state_rollbacks = Counter(
    "gelombang_state_rollbacks",
    "Times a process found the wave's Redis data rolled back in place (fewer tickets than it saw "
    "issued): a new incarnation began and tickets from the lost writes are refused.",
    ["wave"],
    registry=REGISTRY,
)
sessions_completed = Counter(
    "gelombang_sessions_completed",
    "Admitted sessions ended by a complete call.",
    ["wave"],
    registry=REGISTRY,
)
joins = Counter(
    "gelombang_joins",
    "Join requests by result (new, existing, rejoined, held, not_accepting, rate_limited).",
    ["wave", "result"],
    registry=REGISTRY,
)
status_polls = Counter(
    "gelombang_status_polls",
    "Status requests answered, by the ticket state returned.",
    ["wave", "state"],
    registry=REGISTRY,
)
rate_limited = Counter(
    "gelombang_rate_limited",
    "Requests refused by a rate-limit rule.",
    ["rule"],
    registry=REGISTRY,
)
wait_seconds = Histogram(
    "gelombang_wait_seconds",
    "Time from join to admission.",
    ["wave"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400),
    registry=REGISTRY,
)
eta_error_seconds = Histogram(
    "gelombang_eta_error_seconds",
    "Actual wait minus the wait estimated at join (positive: we promised too little).",
    ["wave"],
    buckets=(-3600, -900, -300, -60, -15, -5, 0, 5, 15, 60, 300, 900, 3600),
    registry=REGISTRY,
)
http_request_duration = Histogram(
    "gelombang_http_request_duration_seconds",
    "HTTP request duration by route, method and status class.",
    ["route", "method", "status_class"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
redis_call_duration = Histogram(
    "gelombang_redis_call_duration_seconds",
    "Duration of one Redis round trip (a script call or a pipeline), by operation.",
    ["op"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
redis_errors = Counter(
    "gelombang_redis_errors",
    "Redis calls that failed (connection refused, timeout, script error), by operation.",
    ["op"],
    registry=REGISTRY,
)
batch_size = Histogram(
    "gelombang_batch_size",
    "Requests coalesced into one Redis round trip, by operation.",
    ["op"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
event_loop_lag = Histogram(
    "gelombang_event_loop_lag_seconds",
    "How late the event loop ran a timer that was due (a saturated or blocked process).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
shed_requests = Counter(
    "gelombang_shed_requests",
    "Requests refused with a fast 503 because the process was overloaded (overload.py).",
    registry=REGISTRY,
)
shed_connections = Counter(
    "gelombang_shed_connections",
    "Connections answered with a 503 + Retry-After and closed: opened while the process had "
    "max_connections open, or among the youngest open when the adaptive bound fell below them.",
    registry=REGISTRY,
)
# The process's own bounds (overload.py), one value per process: with --workers N the series
# add up to the host's (livesum), and the worst process's delay is the one to watch (livemax).
connections_open = Gauge(
    "gelombang_connections_open",
    "Connections this process has open (as the adaptive bounds last counted them).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
adaptive_max_connections = Gauge(
    "gelombang_adaptive_max_connections",
    "Open connections this process accepts now: adaptive (throughput x target queueing delay, "
    "adaptive_limit.py) unless max_connections is pinned.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
adaptive_max_inflight = Gauge(
    "gelombang_adaptive_max_inflight",
    "Requests of one route this process lets be in flight now: adaptive unless max_inflight "
    "is pinned.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
adaptive_queue_delay = Gauge(
    "gelombang_adaptive_queue_delay_seconds",
    "Smoothed wait of a request for the event loop, as the adaptive bounds see it (their "
    "target is target_queue_delay_s).",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
admin_actions = Counter(
    "gelombang_admin_actions",
    "Admin API changes, by action.",
    ["action"],
    registry=REGISTRY,
)
admin_refused = Counter(
    "gelombang_admin_refused",
    "Admin API requests refused for a missing or wrong token.",
    registry=REGISTRY,
)

# The autopilot (autopilot.py): read from Redis by every process, so the same everywhere.
autopilot_target_active = Gauge(
    "gelombang_autopilot_target_active",
    "The admitted concurrency the autopilot decided (applied as max_active when it is on).",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
autopilot_admit_rate = Gauge(
    "gelombang_autopilot_admit_rate",
    "The admission rate that follows from the target by Little's law (target / session time).",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
autopilot_latency_seconds = Gauge(
    "gelombang_autopilot_latency_seconds",
    "The origin latency the autopilot read at its last decision (its latency_query); NaN when "
    "missing.",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
autopilot_error_ratio = Gauge(
    "gelombang_autopilot_error_ratio",
    "The origin error ratio the autopilot read at its last decision (its error_query); NaN when "
    "missing.",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
autopilot_signal_stale = Gauge(
    "gelombang_autopilot_signal_stale",
    "1 while the last decision found a health signal missing (it held the last target).",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
autopilot_at_floor = Gauge(
    "gelombang_autopilot_at_floor",
    "1 while the autopilot's target is at its min_active: the origin cannot take more.",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
autopilot_mode = Gauge(
    "gelombang_autopilot_mode",
    "The wave's autopilot mode: 0 off, 1 advise, 2 on.",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
autopilot_decisions = Counter(
    "gelombang_autopilot_decisions",
    "Decisions of the autopilot, by action (increase, decrease, hold, stale, manual_hold); one "
    "per wave per interval across every process.",
    ["wave", "action"],
    registry=REGISTRY,
)
AUTOPILOT_ACTIONS = ("increase", "decrease", "hold", "stale", "manual_hold")


@dataclass(frozen=True)
class AutopilotSeries:
    target: Gauge
    admit_rate: Gauge
    latency: Gauge
    errors: Gauge
    stale: Gauge
    at_floor: Gauge
    mode: Gauge


@functools.lru_cache(maxsize=4096)
def autopilot_series(wave: str) -> AutopilotSeries:
    for action in AUTOPILOT_ACTIONS:
        autopilot_decisions.labels(wave, action)
    return AutopilotSeries(
        target=autopilot_target_active.labels(wave),
        admit_rate=autopilot_admit_rate.labels(wave),
        latency=autopilot_latency_seconds.labels(wave),
        errors=autopilot_error_ratio.labels(wave),
        stale=autopilot_signal_stale.labels(wave),
        at_floor=autopilot_at_floor.labels(wave),
        mode=autopilot_mode.labels(wave),
    )


# Call-backs (docs/callbacks.md): never a contact, a ticket or a link in a label.
callback_optins = Counter(
    "gelombang_callback_optins",
    "Holders who opted in to be called back, by the channel they chose.",
    ["wave", "channel"],
    registry=REGISTRY,
)
callback_messages = Counter(
    "gelombang_callback_messages",
    "Call-back messages by channel, kind (near, turn, carried) and outcome: sent, failed (a try "
    "that will be retried), dead (given up after the last try), dropped (its ticket ended "
    "before it could be sent).",
    ["wave", "channel", "kind", "outcome"],
    registry=REGISTRY,
)
callback_delivery_seconds = Histogram(
    "gelombang_callback_delivery_seconds",
    "Time from a call-back message's creation (the outbox) to its delivery, by channel.",
    ["channel"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
    registry=REGISTRY,
)
callback_outbox = Gauge(
    "gelombang_callback_outbox",
    "Call-back messages not yet delivered (the outbox's backlog), as Redis holds it.",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
callback_pending = Gauge(
    "gelombang_callback_pending",
    "Holders who opted in and have not been told yet that their turn is near.",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
callback_called = Gauge(
    "gelombang_callback_called",
    "Holders the line reached while away, within their return window now.",
    ["wave"],
    registry=REGISTRY,
    multiprocess_mode=WAVE_GAUGE_MODE,
)
callback_calls = Counter(
    "gelombang_callback_calls",
    "Holders the line reached while away (called: told it is their turn, no slot held).",
    ["wave"],
    registry=REGISTRY,
)
callback_returns = Counter(
    "gelombang_callback_returns",
    "Called holders by outcome: returned (came back in time and admitted), not_returned (the "
    "window ended first: skipped as abandoned).",
    ["wave", "outcome"],
    registry=REGISTRY,
)
callback_links = Counter(
    "gelombang_callback_links",
    "Return links followed, by result: back, waiting, closed, unknown (used or ended).",
    ["wave", "result"],
    registry=REGISTRY,
)
callback_carried = Counter(
    "gelombang_callback_carried",
    "Verified holders carried over from a wave that ended to the next, by outcome: moved, "
    "held (already had a place there), refused (the next wave closed or is unknown).",
    ["wave", "outcome"],
    registry=REGISTRY,
)
CALLBACK_CHANNELS = ("sms", "whatsapp", "email", "webpush")
CALLBACK_KINDS = ("near", "turn", "carried")
CALLBACK_OUTCOMES = ("sent", "failed", "dead", "dropped")
LINK_RESULTS = ("back", "waiting", "closed", "unknown")
CARRY_OUTCOMES = ("moved", "held", "refused")


@dataclass(frozen=True)
class CallbackSeries:
    outbox: Gauge
    pending: Gauge
    called: Gauge
    calls: Counter
    returned: Counter
    not_returned: Counter


@functools.lru_cache(maxsize=4096)
def callback_series(wave: str) -> CallbackSeries:
    """A call-back wave's series, its rare ones zero-initialised (for rate() and alerts)."""
    for channel in CALLBACK_CHANNELS:
        callback_optins.labels(wave, channel)
        for kind in CALLBACK_KINDS:
            for outcome in CALLBACK_OUTCOMES:
                callback_messages.labels(wave, channel, kind, outcome)
    for result in LINK_RESULTS:
        callback_links.labels(wave, result)
    for outcome in CARRY_OUTCOMES:
        callback_carried.labels(wave, outcome)
    return CallbackSeries(
        outbox=callback_outbox.labels(wave),
        pending=callback_pending.labels(wave),
        called=callback_called.labels(wave),
        calls=callback_calls.labels(wave),
        returned=callback_returns.labels(wave, "returned"),
        not_returned=callback_returns.labels(wave, "not_returned"),
    )


WAVE_STATES = ("scheduled", "prequeue", "open", "paused", "full", "closed")
JOIN_RESULTS = ("new", "existing", "rejoined", "held", "not_accepting", "rate_limited")
TICKET_STATES = (
    "prequeue",
    "waiting",
    "closing",
    "paused",
    "admitted",
    "completed",
    "expired",
    "closed",
)
# One per Store call site: every Lua script (store.SCRIPTS), plain wave admin reads, ping.
REDIS_OPS = (
    "join",
    "status",
    "seen",
    "admit",
    "read_counts",
    "leave",
    "complete",
    "put_wave",
    "control",
    "autopilot",
    "revoked",
    "wave_admin",
    "ping",
    # public proof (issue 25): the draw, the ledger's seal and reads, one-time token bindings
    "draw",
    "ledger_seal",
    "proof",
    "bind",
    # call-backs (issue 24)
    "optin",
    "notify",
    "return_link",
    "outbox",
    "carry",
)


@dataclass(frozen=True)
class WaveSeries:
    """A wave's labelled series, looked up once (`labels()` validates and locks on every call:
    13 lookups per admission step showed in the profile of an idle wave)."""

    waiting: Gauge
    prequeue: Gauge
    active: Gauge
    admitted: Gauge
    max_active: Gauge
    admit_rate: Gauge
    quota: Gauge
    states: dict[str, Gauge]
    abandoned: Counter
    expired: Counter
    admissions: Counter
    wait: Histogram
    eta_error: Histogram


@functools.lru_cache(maxsize=4096)
def wave_series(wave: str) -> WaveSeries:
    """The wave's series; the first call also zero-initialises its rare ones, so rate() and
    absence alerts work from the start."""
    for metric in (sessions_completed, state_rollbacks):
        metric.labels(wave)
    for result in JOIN_RESULTS:
        joins.labels(wave, result)
    for state in TICKET_STATES:
        status_polls.labels(wave, state)
    return WaveSeries(
        waiting=queue_waiting.labels(wave),
        prequeue=queue_prequeue.labels(wave),
        active=sessions_active.labels(wave),
        admitted=wave_admitted.labels(wave),
        max_active=wave_max_active.labels(wave),
        admit_rate=wave_admit_rate.labels(wave),
        quota=wave_quota.labels(wave),
        states={state: wave_state.labels(wave, state) for state in WAVE_STATES},
        abandoned=abandoned.labels(wave),
        expired=sessions_expired.labels(wave),
        admissions=admissions.labels(wave),
        wait=wait_seconds.labels(wave),
        eta_error=eta_error_seconds.labels(wave),
    )


# The rule names of ratelimit.RateLimitRules, and the admin API's audited actions.
RATE_LIMIT_RULES = ("join_per_ip", "join_per_registrant", "status_per_ip", "status_per_ticket")
ADMIN_ACTIONS = ("create", "update", "delete", "pause", "resume", "close")


def init_process_series() -> None:
    """Zero series for rare events, so increase() and rate() see their first occurrence."""
    for rule in RATE_LIMIT_RULES:
        rate_limited.labels(rule)
    for action in ADMIN_ACTIONS:
        admin_actions.labels(action)
    for op in REDIS_OPS:
        redis_errors.labels(op)
        redis_call_duration.labels(op)
