"""The verdict of a rehearsal: pure functions from what was counted and sampled to a list of
passed/failed checks. No Locust import here (Locust monkey-patches the process on import), so
the logic is testable anywhere; `checks.py` wires it to Locust's events.

Checks:
- requests_made: the run reached the queue at all.
- queue_no_5xx: the queue service answered no 5xx (README, guarantee 9: bad input gets a 4xx,
  never a 500; 503 only when Redis is down, which a rehearsal must not see).
- origin_within_capacity: the origin never had to shed load (no overload/timeout rejections,
  no 5xx) while Gelombang was in front of it; reports the sampled peak in flight vs capacity.
- bots_rate_limited: at least `--check-bot-limited-min` of bot requests were refused with 429.
- admission_rate: never more than admit_rate x time + burst over the run, and while a backlog
  waited, within `--check-admission-tolerance` of the configured rate (changes made by the admin
  user included, since the rate is sampled).
- refresh_keeps_place: no status answer ever showed a worse position than an earlier one.
- callbacks_delivered (a scenario with call-backs only): people who opted in got their
  messages, genuine ones: no delivery failed the signature check, and when someone opted in
  with an ETA under the wave's lead_s (told at once), messages reached the rehearsal's gateway
  and were handed to their registrants. Returns, and admissions and registrations after them,
  are reported (not judged: a message in the run's last seconds leaves no time to come back).

A check that could not be measured (too few bot requests, no backlog long enough, no samples)
is SKIP, and fails the verdict unless it was skipped on purpose (`--check-allow-skip NAME`):
a gate that passes on what it never measured gates nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loadtests import counters
from loadtests.targets import metric_sum

MIN_BACKLOG_S = 3.0  # less backlogged time than this cannot measure a rate
MIN_BOT_REQUESTS = 50  # fewer bot requests than this cannot show the limits at work


@dataclass(frozen=True)
class WaveSample:
    t: float
    state: str
    admitted: int
    waiting: int
    active: int
    admit_rate: float
    admit_burst: float
    max_active: int


@dataclass(frozen=True)
class OriginSample:
    t: float
    inflight: float
    capacity: float
    rejected_overload: float
    rejected_timeout: float
    answered_5xx: float


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str
    skipped: bool = False


def wave_sample(view: dict[str, Any], t: float) -> WaveSample:
    config = view.get("wave", {})
    counts = view.get("counts", {})
    return WaveSample(
        t=t,
        state=str(view.get("state", "")),
        admitted=int(counts.get("admitted", 0)),
        waiting=int(counts.get("waiting", 0)),
        active=int(counts.get("active", 0)),
        admit_rate=float(config.get("admit_rate", 0.0)),
        admit_burst=float(config.get("admit_burst", 0.0) or 0.0),
        max_active=int(config.get("max_active", 0) or 0),
    )


WAVE_STATES = ("scheduled", "prequeue", "open", "paused", "full", "closed")


def wave_sample_from_metrics(samples: dict[Any, float], wave: str, t: float) -> WaveSample | None:
    """The same sample from the queue's `/metrics` (no admin token needed). The wave gauges are
    read from Redis by every process, so any replica, even behind a balancer, gives the
    deployment-wide value. None when the queue does not report the wave (yet)."""
    states = [
        s for s in WAVE_STATES if metric_sum(samples, "gelombang_wave_state", wave=wave, state=s)
    ]
    if not states:
        return None
    rate = metric_sum(samples, "gelombang_wave_admit_rate", wave=wave)
    return WaveSample(
        t=t,
        state=states[0],
        admitted=int(metric_sum(samples, "gelombang_wave_admitted", wave=wave)),
        waiting=int(metric_sum(samples, "gelombang_queue_waiting", wave=wave)),
        active=int(metric_sum(samples, "gelombang_sessions_active", wave=wave)),
        admit_rate=rate,
        admit_burst=max(1.0, rate),  # not exported; the default burst
        max_active=int(metric_sum(samples, "gelombang_wave_max_active", wave=wave)),
    )


def origin_sample(samples: dict[Any, float], t: float) -> OriginSample:
    return OriginSample(
        t=t,
        inflight=metric_sum(samples, "gelombang_origin_inflight"),
        capacity=metric_sum(samples, "gelombang_origin_capacity"),
        rejected_overload=metric_sum(samples, "gelombang_origin_rejected_total", reason="overload"),
        rejected_timeout=metric_sum(samples, "gelombang_origin_rejected_total", reason="timeout"),
        answered_5xx=metric_sum(samples, "gelombang_origin_requests_total", status_class="5xx"),
    )


# ---------------------------------------------------------------------------- the checks


def check_requests_made(counts: Mapping[str, int]) -> CheckResult:
    made = counts.get(counters.QUEUE_REQUESTS, 0)
    return CheckResult("requests_made", made > 0, f"{made} requests to the queue")


def check_queue_no_5xx(counts: Mapping[str, int]) -> CheckResult:
    errors = counts.get(counters.QUEUE_5XX, 0)
    total = counts.get(counters.QUEUE_REQUESTS, 0)
    return CheckResult("queue_no_5xx", errors == 0, f"{errors} of {total} answers were 5xx")


def check_bots_rate_limited(counts: Mapping[str, int], minimum: float) -> CheckResult:
    total = counts.get(counters.BOT_REQUESTS, 0)
    if total < MIN_BOT_REQUESTS:
        # Each rule lets a burst through first (join 5, status 10 per registrant/ticket by
        # default): a handful of bot requests says nothing about the limits.
        return CheckResult(
            "bots_rate_limited",
            True,
            f"only {total} bot requests (< {MIN_BOT_REQUESTS}): too few to judge",
            skipped=True,
        )
    share = counts.get(counters.BOT_RATE_LIMITED, 0) / total
    return CheckResult(
        "bots_rate_limited",
        share >= minimum,
        f"{share:.1%} of {total} bot requests got 429 (need >= {minimum:.0%})",
    )


def check_refresh_keeps_place(counts: Mapping[str, int]) -> CheckResult:
    worse = counts.get(counters.POSITION_WORSENED, 0)
    return CheckResult("refresh_keeps_place", worse == 0, f"{worse} answers showed a worse place")


def check_callbacks_delivered(counts: Mapping[str, int]) -> CheckResult:
    """Did the people who opted in get their messages? Judged on those due one at once (an
    ETA under lead_s when they opted in): with a line longer than lead_s for the whole run,
    nobody is told, and no message says nothing (not measured)."""
    name = "callbacks_delivered"
    opted = counts.get(counters.CALLBACK_OPTED_IN, 0)
    due = counts.get(counters.CALLBACK_DUE, 0)
    taken = counts.get(counters.CALLBACK_MESSAGES, 0)
    forged = counts.get(counters.CALLBACK_FORGED, 0)
    delivered = counts.get(counters.CALLBACK_DELIVERED, 0)
    detail = (
        f"{opted} opted in ({due} due a message at once); the gateway took {taken} messages, "
        f"{delivered} reached their registrant, {max(0, taken - delivered)} to nobody listed, "
        f"{forged} forged; {counts.get(counters.CALLBACK_RETURNED, 0)} came back by the link, "
        f"{counts.get(counters.CALLBACK_ADMITTED, 0)} admitted after, "
        f"{counts.get(counters.CALLBACK_REGISTERED, 0)} registered"
    )
    if forged:
        return CheckResult(
            name, False, f"{detail}: signatures failed, the gateway's secret is not the queue's"
        )
    if opted == 0:
        return CheckResult(name, True, f"{detail}: nobody opted in", skipped=True)
    if taken == 0 and due == 0:
        return CheckResult(
            name, True, f"{detail}: nobody was near enough their turn to be told", skipped=True
        )
    if taken == 0:
        return CheckResult(name, False, f"{detail}: no message reached the gateway")
    return CheckResult(name, delivered > 0, detail)


def check_origin_within_capacity(samples: list[OriginSample], seen_5xx: int = 0) -> CheckResult:
    """`seen_5xx`: origin 5xx and lost answers as the users saw them (a crash in a handler may
    never reach the origin's own metrics)."""
    if len(samples) < 2:
        return CheckResult(
            "origin_within_capacity", True, "origin metrics not reachable", skipped=True
        )
    first, last = samples[0], samples[-1]
    shed = (last.rejected_overload - first.rejected_overload) + (
        last.rejected_timeout - first.rejected_timeout
    )
    errors = max(last.answered_5xx - first.answered_5xx, seen_5xx)
    peak = max(s.inflight for s in samples)
    capacity = max(s.capacity for s in samples)
    over = peak > capacity > 0
    return CheckResult(
        "origin_within_capacity",
        shed == 0 and errors == 0 and not over,
        f"sampled peak in flight {peak:g} of capacity {capacity:g}; "
        f"{shed:g} requests shed, {errors:g} answered 5xx",
    )


def check_admission_rate(samples: list[WaveSample], tolerance: float) -> CheckResult:
    """Upper bound over the whole run; lower bound only while a backlog waited for admission
    (an empty line or a full max_active legitimately admits less)."""
    name = "admission_rate"
    if len(samples) < 2:
        return CheckResult(name, True, "the wave could not be sampled", skipped=True)
    allowed = 0.0
    for a, b in itertools.pairwise(samples):
        allowed += a.admit_rate * (b.t - a.t)
    burst = max(s.admit_burst or max(1.0, s.admit_rate) for s in samples)
    slack = burst + max(s.admit_rate for s in samples)  # one sample period of misalignment
    admitted = samples[-1].admitted - samples[0].admitted
    if admitted > allowed + slack:
        return CheckResult(
            name, False, f"admitted {admitted}, more than rate x time {allowed:.1f} + {slack:.1f}"
        )
    backlog_s = backlog_admitted = backlog_expected = 0.0
    for a, b in itertools.pairwise(samples):
        capped = a.max_active > 0 and (a.active >= a.max_active or b.active >= b.max_active)
        if a.state == b.state == "open" and a.waiting > 0 and b.waiting > 0 and not capped:
            backlog_s += b.t - a.t
            backlog_admitted += b.admitted - a.admitted
            backlog_expected += a.admit_rate * (b.t - a.t)
    if backlog_s < MIN_BACKLOG_S:
        return CheckResult(
            name,
            True,
            f"admitted {admitted} (<= {allowed + slack:.1f} allowed); "
            f"backlog only {backlog_s:.1f} s, achieved rate not measurable",
            skipped=True,
        )
    achieved = backlog_admitted / backlog_s
    configured = backlog_expected / backlog_s
    gap = abs(achieved - configured)
    limit = tolerance * configured + burst / backlog_s
    return CheckResult(
        name,
        gap <= limit,
        f"achieved {achieved:.2f}/s vs configured {configured:.2f}/s over {backlog_s:.1f} s "
        f"of backlog (allowed gap {limit:.2f}/s)",
    )


def evaluate(
    counts: Mapping[str, int],
    waves: list[WaveSample],
    origins: list[OriginSample],
    *,
    bot_limited_min: float,
    admission_tolerance: float,
    allow_skipped: frozenset[str] = frozenset(),
    callbacks: bool = False,
) -> list[CheckResult]:
    """`callbacks`: the scenario has call-backs (judged only then)."""
    results = [
        check_requests_made(counts),
        check_queue_no_5xx(counts),
        check_origin_within_capacity(origins, counts.get(counters.ORIGIN_5XX, 0)),
        check_bots_rate_limited(counts, bot_limited_min),
        check_admission_rate(waves, admission_tolerance),
        check_refresh_keeps_place(counts),
    ]
    if callbacks:
        results.append(check_callbacks_delivered(counts))
    return [judge_skipped(r, allow_skipped) for r in results]


def judge_skipped(result: CheckResult, allowed: frozenset[str]) -> CheckResult:
    """An unmeasured check passes only when it was allowed to be skipped."""
    if not result.skipped or result.name in allowed:
        return result
    return CheckResult(
        result.name,
        False,
        f"not measured: {result.detail} (--check-allow-skip {result.name} if on purpose)",
        skipped=True,
    )


def render(results: list[CheckResult]) -> str:
    lines = ["Gelombang verdict:"]
    for r in results:
        mark = ("SKIP" if r.passed else "SKIP!") if r.skipped else ("PASS" if r.passed else "FAIL")
        lines.append(f"  {mark:<5} {r.name:<24} {r.detail}")
    passed = all(r.passed for r in results)
    lines.append(f"  => {'PASSED' if passed else 'FAILED'}")
    return "\n".join(lines)
