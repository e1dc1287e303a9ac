"""Guarantee 13, the law: the autopilot never leaves its bounds, never raises admission on a
missing signal, backs off on a breach at most once per half session and once per signal
window, grows only on a healthy origin whose concurrency is used, climbs back quickly after a
second cut in a row (which may answer a stale signal), paces admissions so a
target can be used even while the measured session time still remembers an overload, and on
an origin with a session-long feedback delay settles near the capacity without oscillating or
creeping, and follows a capacity that halves."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from queue_service.autopilot import (
    AutopilotConfig,
    ControllerState,
    Load,
    Signals,
    decide,
    parse_autopilot,
    query_window_s,
    rate_for,
    start_target,
)
from queue_service.errors import BadRequest

CONFIG = AutopilotConfig(
    mode="on",
    prometheus_url="http://prometheus:9090",
    latency_target_s=2.0,
    error_target=0.02,
    min_active=10,
    max_active=1000,
    interval_s=15,
    signal_window_s=15,  # the signals look back one interval (the default queries: 1 minute)
)
HEALTHY = Signals(latency_s=0.5, error_ratio=0.0)
BUSY = Load(active=200, waiting=5000, session_s=60)


def test_a_missing_signal_holds_and_never_opens_the_gates() -> None:
    state = ControllerState(target=200)
    for signals in (Signals(None, 0.0), Signals(0.5, None), Signals(None, None)):
        decision = decide(CONFIG, state, signals, BUSY, now=1000)
        assert decision.action == "stale" and decision.target == 200


def test_an_operators_change_holds_the_autopilot_off() -> None:
    state = ControllerState(target=300, hold_until=2000)
    decision = decide(CONFIG, state, Signals(9.0, 0.5), BUSY, now=1999)
    assert decision.action == "manual_hold" and decision.target == 300
    assert decide(CONFIG, state, Signals(9.0, 0.5), BUSY, now=2001).action == "decrease"


def test_a_breach_cuts_multiplicatively_once_per_half_session_and_never_below_the_floor() -> None:
    state = ControllerState(target=200)
    slow = decide(CONFIG, state, Signals(2.5, 0.0), BUSY, now=1000)
    assert slow.action == "decrease" and slow.target == 140  # x0.7
    failing = decide(CONFIG, state, Signals(0.5, 0.1), BUSY, now=1000)
    assert failing.target == 100  # errors over 4x their target: x0.5
    again = decide(CONFIG, slow.state, Signals(2.5, 0.0), BUSY, now=1000 + 29)
    assert again.action == "hold" and again.target == 140  # half a session has not passed
    later = decide(CONFIG, slow.state, Signals(2.5, 0.0), BUSY, now=1000 + 31)
    assert later.action == "decrease" and later.target == 98
    floor = decide(CONFIG, ControllerState(target=12), Signals(9.0, 0.9), BUSY, now=1000)
    assert floor.target == CONFIG.min_active


def test_growth_needs_a_healthy_origin_used_concurrency_and_people_waiting() -> None:
    state = ControllerState(target=200, breached=True)
    assert decide(CONFIG, state, HEALTHY, BUSY, now=1000).target == 220  # +10%
    slow_start = decide(CONFIG, ControllerState(target=200), HEALTHY, BUSY, now=1000)
    assert slow_start.target == 250  # +25% until the first breach
    band = decide(CONFIG, state, Signals(1.8, 0.0), BUSY, now=1000)
    assert band.action == "hold" and band.target == 200  # between 80% and 100% of target
    unused = decide(CONFIG, state, HEALTHY, replace(BUSY, active=100), now=1000)
    assert unused.action == "hold"  # half the concurrency idle: no room was tested
    nobody = decide(CONFIG, state, HEALTHY, replace(BUSY, waiting=0), now=1000)
    assert nobody.action == "hold"
    after_cut = replace(state, last_decrease_at=1000 - 59)
    assert decide(CONFIG, after_cut, HEALTHY, BUSY, now=1000).action == "hold"  # < 1 session
    top = decide(CONFIG, ControllerState(target=995, breached=True), HEALTHY,
                 replace(BUSY, active=995), now=1000)  # fmt: skip
    assert top.target == CONFIG.max_active


def test_a_second_cut_in_a_row_is_climbed_back_at_the_slow_start_pace() -> None:
    """A cut that follows another with no increase between may answer a signal that still
    shows the backlog the first one dealt with (the benchmark: 42 -> 21 -> 10 after the origin
    halved, then +1 a step for a minute): the law climbs back to the target before it at +25% a
    step, then probes at +10% again. One cut alone, or one after an increase, or one long after
    the last, is an ordinary breach: +10% from there."""
    breached = ControllerState(target=200, breached=True)
    first = decide(CONFIG, breached, Signals(2.5, 0.0), BUSY, now=1000)
    assert first.target == 140 and first.state.recover_to == 0
    second = decide(CONFIG, first.state, Signals(2.5, 0.0), BUSY, now=1031)
    assert second.target == 98 and second.state.recover_to == 140

    def healthy(state: ControllerState, now: float) -> ControllerState:
        return decide(CONFIG, state, HEALTHY, replace(BUSY, active=state.target), now).state

    up = healthy(second.state, now=1031 + 60)  # a session after the cut
    assert up.target == 98 + 24  # +25%
    back = healthy(up, now=1091 + 30)  # half a session after the last increase
    assert back.target == 140  # not beyond the target before the second cut
    assert healthy(back, now=1121 + 30).target == 154  # +10% from there

    assert healthy(first.state, now=1000 + 60).target == 154  # one cut alone: +10%
    after_increase = replace(first.state, last_increase_at=1020)
    assert decide(CONFIG, after_increase, Signals(2.5, 0.0), BUSY, now=1051).state.recover_to == 0
    # the increase wait (a session, 60 s) and an interval after the first cut: a new breach
    late = decide(CONFIG, first.state, Signals(2.5, 0.0), BUSY, now=1000 + 60 + 15 + 1)
    assert late.action == "decrease" and late.state.recover_to == 0


def test_the_rate_follows_the_target_by_littles_law_and_starts_from_the_configured_value() -> None:
    decision = decide(CONFIG, ControllerState(target=300), HEALTHY, replace(BUSY, active=0), 1)
    assert decision.admit_rate == pytest.approx(300 / 60)
    assert rate_for(300, 60) == 5.0
    assert start_target(CONFIG, 5000) == 1000 and start_target(CONFIG, 0) == 10
    assert start_target(CONFIG, 400) == 400


def origin_signals(active: float, capacity: float) -> Signals:
    """An origin that serves `capacity` sessions at 0.5 s; beyond, its queue grows and its
    latency with it, and past 1.3x it times out (the sample origin's shape)."""
    load = active / capacity
    latency = 0.5 if load <= 1 else 0.5 + 6 * (load - 1)
    errors = 0.0 if load <= 1.3 else min(1.0, (load - 1.3) * 2)
    return Signals(latency, errors)


Trace = list[tuple[float, int, float, float]]


def run_against(capacities: list[float], intervals: int) -> Trace:
    """The law against that origin with a session-long feedback delay: the active sessions
    move a quarter of the way to the target each interval (sessions take 60 s, decisions come
    every 15 s). Returns (time, target, active, capacity) per interval."""
    interval_s, session_s = 15.0, 60.0
    config = replace(CONFIG, max_active=2000, interval_s=interval_s)
    state = ControllerState(target=start_target(config, 1500))  # the operator guessed 1,500
    active = 0.0
    trace: Trace = []
    for i in range(intervals):
        now = i * interval_s
        capacity = capacities[min(len(capacities) - 1, i * len(capacities) // intervals)]
        active += (min(state.target, 1e9) - active) * min(1.0, interval_s / session_s)
        signals = origin_signals(active, capacity)
        load = Load(active=round(active), waiting=100_000, session_s=session_s)
        decision = decide(config, state, signals, load, now)
        state = decision.state
        trace.append((now, decision.target, active, capacity))
    return trace


def test_on_a_session_long_feedback_loop_it_settles_near_capacity_without_oscillating() -> None:
    """A guess far above capacity (1,500 for 400): cut back at once, then the AIMD sawtooth of
    a bounded amplitude, the origin kept busy and never pushed into errors again."""
    capacity = 400
    trace = run_against([capacity], intervals=120)  # 30 minutes
    settled = trace[40:]
    targets = [target for _, target, _, _ in settled]
    loads = [active / capacity for _, _, active, _ in settled]
    assert max(loads) <= 1.3  # errors start at 1.3x this origin's capacity: never again
    assert sum(loads) / len(loads) >= 0.95  # the origin is kept busy
    assert 0.45 * capacity <= min(targets) and max(targets) <= 1.5 * capacity
    assert max(targets) - min(targets) <= 0.5 * capacity  # no swings between extremes
    # no creep: the last ten minutes look like the ten before
    assert abs(sum(targets[-40:]) / 40 - sum(targets[-80:-40]) / 40) <= 0.1 * capacity


def test_a_capacity_that_halves_is_followed_within_a_few_intervals() -> None:
    trace = run_against([800.0, 400.0], intervals=160)
    halved_at = next(i for i, (_, _, _, c) in enumerate(trace) if c == 400.0)
    after = trace[halved_at:]
    cut = next(i for i, (_, target, _, _) in enumerate(after) if target <= 400 * 1.3)
    assert cut <= 6  # a few intervals (90 s here) to cut below the new error point
    relieved = next(i for i, (_, _, active, _) in enumerate(after) if active <= 400 * 1.3)
    assert relieved <= cut + 8  # and the sessions already admitted drain within a session
    loads = [active / 400 for _, _, active, _ in after[30:]]
    assert max(loads) <= 1.3 and sum(loads) / len(loads) >= 0.95


def test_it_recovers_from_the_floor_when_the_origin_does() -> None:
    trace = run_against([5.0, 800.0], intervals=200)
    recovered_at = next(i for i, (_, _, _, c) in enumerate(trace) if c == 800.0)
    final = trace[-1][1]
    assert min(target for _, target, _, _ in trace[recovered_at - 10 : recovered_at]) == 10
    assert final >= 800 * 0.6  # it climbed back


def test_a_bad_autopilot_object_is_refused_clearly() -> None:
    good = {"mode": "on", "prometheus_url": "http://p:9090", "max_active": 500}
    assert parse_autopilot(good).max_active == 500
    assert parse_autopilot(None).mode == "off"
    for bad, message in (
        ({**good, "mode": "auto"}, "mode"),
        ({"mode": "on", "max_active": 500}, "prometheus_url"),
        ({"mode": "advise", "prometheus_url": "http://p"}, "max_active"),
        ({**good, "min_active": 600}, "min_active"),
        ({**good, "prometheus_url": "ftp://p"}, "prometheus_url"),
        ({**good, "error_target": 2}, "error_target"),
        ({**good, "interval_s": 0.5}, "interval_s"),
        ({**good, "colour": 1}, "unknown"),
        ("on", "object"),
    ):
        with pytest.raises(BadRequest, match=message):
            parse_autopilot(bad)
    partial = parse_autopilot({"interval_s": 3}, parse_autopilot(good))
    assert partial.interval_s == 3 and partial.mode == "on"
    assert math.isclose(CONFIG.clamp(5000.4), 1000)
    for bad_window in (-1, "1m", True):
        with pytest.raises(BadRequest, match="signal_window_s"):
            parse_autopilot({**good, "signal_window_s": bad_window})
    assert parse_autopilot({**good, "signal_window_s": 20}).signal_window == 20
    assert parse_autopilot({"signal_window_s": None}, partial).signal_window_s is None


def test_the_signal_window_is_the_queries_largest_range_unless_set() -> None:
    assert query_window_s("rate(x[1m])") == 60
    assert query_window_s("rate(x[30s]) / rate(y[10s])") == 30
    assert query_window_s("max_over_time(rate(x[10s])[1m30s:5s])") == 90
    assert query_window_s("vector(5)") == 0 and query_window_s("job:latency:p95") == 0
    default = AutopilotConfig()
    assert default.signal_window == 60  # the default queries' [1m]
    assert default.settle_s == 75  # plus the scrape that lags it: a quarter of the window
    short = parse_autopilot({"latency_query": "histogram_quantile(0.95, rate(b[10s]))",
                             "error_query": "rate(e[30s]) / rate(r[30s])"})  # fmt: skip
    assert short.signal_window == 30
    assert replace(short, signal_window_s=5).signal_window == 5


def cuts_under_a_lasting_breach(config: AutopilotConfig, seconds: float) -> list[int]:
    """The targets a breach that never ends leaves behind, one decision per interval (short
    sessions: the half-session rule does not bind)."""
    state, targets, now = ControllerState(target=35), [], 0.0
    while now <= seconds:
        decision = decide(config, state, Signals(2.5, 0.0), replace(BUSY, session_s=2.5), now)
        state, now = decision.state, now + config.interval_s
        targets.append(decision.target)
    return targets


def test_a_cut_is_not_repeated_before_the_signal_window_has_shown_it() -> None:
    """A query window longer than the interval still shows the breach the last cut answered:
    cutting again at every interval took a 10 s window with 3 s intervals from 35 to 11 in
    four intervals, and the default `[1m]` with 15 s intervals to the floor."""
    ten_s = replace(CONFIG, interval_s=3, signal_window_s=None, latency_query="q(b[10s])",
                    error_query="e[10s]")  # fmt: skip
    targets = cuts_under_a_lasting_breach(ten_s, 12)  # four intervals after the first cut
    assert targets == [24, 24, 24, 24, 24]  # one cut: 10 s + its scrape lag have not passed
    assert cuts_under_a_lasting_breach(ten_s, 15)[-1] == 16  # the window shows the breach still
    minute = replace(CONFIG, signal_window_s=None)  # the default queries, 15 s intervals
    targets = cuts_under_a_lasting_breach(minute, 60)
    assert targets == [24] * 5  # not 24, 16, 11, 10, 10
    # nor does it grow while the window still holds the signal from before the change
    cut = decide(minute, ControllerState(target=35, breached=True), Signals(2.5, 0.0),
                 replace(BUSY, active=35, session_s=2.5), 0)  # fmt: skip
    grown = decide(minute, replace(cut.state, target=24), HEALTHY,
                   replace(BUSY, active=24, session_s=2.5), 60)  # fmt: skip
    assert grown.action == "hold"
    assert decide(minute, grown.state, HEALTHY, replace(BUSY, active=24, session_s=2.5),
                  75).action == "increase"  # fmt: skip


def test_after_an_overload_the_rate_lets_the_target_be_used_and_grow_again() -> None:
    """The measured session time remembers the overload for minutes (14 s, against 2.5 s
    once the origin is healthy again). A rate of target / 14 s keeps only 2.5 / 14 of the
    target busy: never the 90% growth needs. Paced at most by the planned session, the
    target fills within one planned session and climbs."""
    config = replace(CONFIG, min_active=4, max_active=400, interval_s=10, signal_window_s=10)
    state = ControllerState(target=12, breached=True, last_decrease_at=0.0)
    true_session_s, measured_s = 2.5, 14.0
    targets = []
    for i in range(1, 31):  # five minutes
        now = 10.0 * i
        rate = decide(config, state, HEALTHY, Load(0, 5000, measured_s, 2.5), now).admit_rate
        active = min(state.target, round(rate * true_session_s))  # Little's law, real sessions
        decision = decide(config, state, HEALTHY, Load(active, 5000, measured_s, 2.5), now)
        state = decision.state
        targets.append(decision.target)
    assert rate_for(12, 2.5) == pytest.approx(4.8)
    assert targets[2] > 12  # growing within half a minute of healthy signals
    assert targets[-1] >= 34  # the origin's best (about 34 at once) within five minutes


def test_the_rate_never_starves_the_target_when_the_measured_session_lags() -> None:
    # After a collapse the measured slot hold remembers the sessions that waited on timeouts
    # (here 8 s against a planned 1.5 s). A rate of target / 8 s keeps the concurrency from
    # ever being all used, so the law could never raise the target again: measured on the
    # sample origin with a 4 s timeout and a backlog of 4x its workers (the autopilot
    # benchmark's scenario at a first setting, loadtests/RESULTS.md), target 5 with 1-2
    # sessions active and 900 waiting. The planned session caps the time the rate is paced
    # over. (At the benchmark's final setting, a 2 s timeout, the hold lags less and the
    # e2e test passes with or without this cap: this unit test is what holds it.)
    state = ControllerState(target=20, breached=True)
    lagging = Load(active=20, waiting=900, session_s=8.0, planned_session_s=1.5)
    decision = decide(CONFIG, state, HEALTHY, lagging, now=1000)
    assert decision.admit_rate == pytest.approx(rate_for(decision.target, 1.5))
    # a measured session shorter than the plan still paces the rate
    shorter = Load(active=20, waiting=900, session_s=1.0, planned_session_s=1.5)
    quicker = decide(CONFIG, state, HEALTHY, shorter, now=1000)
    assert quicker.admit_rate == pytest.approx(rate_for(quicker.target, 1.0))
