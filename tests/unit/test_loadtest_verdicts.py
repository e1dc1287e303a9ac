"""The Locust rehearsal's judgement, without Locust: the verdict checks, the opening curve, the
stepped stress report and the loopback rule (`loadtests.verdict`, `curves`, `stepping` and
`targets` do not import Locust; the rehearsals themselves run in tests/e2e/test_loadtests.py)."""

from __future__ import annotations

import itertools

from loadtests import counters
from loadtests.curves import OpeningWindow, user_curve
from loadtests.stepping import BreakLimits, StepRecord, breaking_point, render_steps
from loadtests.verdict import (
    OriginSample,
    WaveSample,
    check_admission_rate,
    check_bots_rate_limited,
    check_callbacks_delivered,
    check_origin_within_capacity,
    evaluate,
    render,
    wave_sample_from_metrics,
)
from simulator.scenario import load_scenario


def wave_samples(rate: float, admitted_per_s: float, seconds: int) -> list[WaveSample]:
    return [
        WaveSample(float(t), "open", int(admitted_per_s * t), 50, 0, rate, rate, 0)
        for t in range(seconds + 1)
    ]


def test_admission_check_fails_on_over_admission_and_on_a_stalled_queue() -> None:
    assert check_admission_rate(wave_samples(10, 10, 20), 0.2).passed
    over = check_admission_rate(wave_samples(10, 20, 20), 0.2)
    assert not over.passed and "more than" in over.detail
    stalled = check_admission_rate(wave_samples(10, 2, 20), 0.2)
    assert not stalled.passed and "achieved 2.00/s" in stalled.detail
    # No backlog (nobody waiting): a low rate is not a failure, and says so.
    idle = [WaveSample(float(t), "open", t, 0, 0, 10, 10, 0) for t in range(21)]
    result = check_admission_rate(idle, 0.2)
    assert result.passed and result.skipped


def test_origin_and_bot_checks_fail_when_they_should() -> None:
    calm = [OriginSample(0, 3, 50, 0, 0, 0), OriginSample(5, 10, 50, 0, 0, 0)]
    assert check_origin_within_capacity(calm).passed
    shed = [OriginSample(0, 3, 50, 0, 0, 0), OriginSample(5, 50, 50, 7, 2, 9)]
    assert not check_origin_within_capacity(shed).passed
    assert not check_origin_within_capacity(calm, seen_5xx=1).passed
    bots = {counters.BOT_REQUESTS: 100, counters.BOT_RATE_LIMITED: 30}
    assert not check_bots_rate_limited(bots, 0.5).passed
    assert check_bots_rate_limited(bots, 0.25).passed
    results = evaluate(
        {counters.QUEUE_REQUESTS: 10, counters.QUEUE_5XX: 1},
        [],
        calm,
        bot_limited_min=0.5,
        admission_tolerance=0.2,
        allow_skipped=frozenset({"bots_rate_limited", "admission_rate"}),
    )
    assert [r.name for r in results if not r.passed] == ["queue_no_5xx"]


def test_a_check_that_could_not_be_measured_fails_the_gate_unless_skipped_on_purpose() -> None:
    counts = {counters.QUEUE_REQUESTS: 10}
    calm = [OriginSample(0, 3, 50, 0, 0, 0), OriginSample(5, 10, 50, 0, 0, 0)]
    results = evaluate(counts, [], calm, bot_limited_min=0.5, admission_tolerance=0.2)
    unmeasured = {r.name: r for r in results if r.skipped}
    assert set(unmeasured) == {"bots_rate_limited", "admission_rate"}
    assert all(not r.passed and "not measured" in r.detail for r in unmeasured.values())
    assert "=> FAILED" in render(results) and "SKIP!" in render(results)
    allowed = evaluate(
        counts, [], calm, bot_limited_min=0.5, admission_tolerance=0.2,
        allow_skipped=frozenset({"bots_rate_limited", "admission_rate"}),
    )  # fmt: skip
    assert all(r.passed for r in allowed) and "=> PASSED" in render(allowed)


def test_wave_opening_curve_builds_up_spikes_at_opening_and_decays() -> None:
    scenario = load_scenario("laptop")
    window = OpeningWindow.of(scenario)
    curve = user_curve(scenario.arrival_process(), window, 100)
    peak = curve.index(max(curve))
    opening = (scenario.clock.opens_at_s - window.start_s) / (window.end_s - window.start_s)
    assert abs(peak / 100 - opening) <= 0.02  # the spike is at the opening
    assert curve[0] < 0.2 and curve[-1] < 0.1 and max(curve) == 1.0
    assert all(a <= b for a, b in itertools.pairwise(curve[: peak + 1]))  # build-up
    assert all(a >= b for a, b in itertools.pairwise(curve[peak:]))  # decay


def test_the_wave_can_be_sampled_from_the_queue_metrics_without_an_admin_token() -> None:
    def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (name, tuple(sorted(labels.items())))

    samples = {
        key("gelombang_wave_state", wave="w1", state="open"): 1.0,
        key("gelombang_wave_state", wave="w1", state="paused"): 0.0,
        key("gelombang_wave_admitted", wave="w1"): 42.0,
        key("gelombang_queue_waiting", wave="w1"): 7.0,
        key("gelombang_sessions_active", wave="w1"): 3.0,
        key("gelombang_wave_admit_rate", wave="w1"): 2.5,
        key("gelombang_wave_max_active", wave="w1"): 10.0,
        key("gelombang_wave_admitted", wave="other"): 1000.0,
    }
    sample = wave_sample_from_metrics(samples, "w1", 5.0)
    assert sample == WaveSample(5.0, "open", 42, 7, 3, 2.5, 2.5, 10)
    assert wave_sample_from_metrics(samples, "unknown", 5.0) is None


def test_stress_steps_report_the_first_step_over_the_limits() -> None:
    limits = BreakLimits(max_fail_ratio=0.01, max_p95_ms=100)
    steps = [
        StepRecord(1, 20, 10.0, 1000, 0, 12),
        StepRecord(2, 40, 10.0, 2000, 5, 40),
        StepRecord(3, 60, 10.0, 2100, 0, 250),  # throughput flat, latency up: broken
        StepRecord(4, 80, 10.0, 1500, 300, 900),
    ]
    found = breaking_point(steps, limits)
    assert found is not None and found[0].step == 3 and "p95 250 ms" in found[1]
    report = render_steps(steps, limits)
    assert "breaking point at step 3 (60 users)" in report
    assert "last step within limits: 40 users, 200.0 req/s" in report
    assert breaking_point(steps[:2], limits) is None
    assert breaking_point([StepRecord(1, 5, 1.0, 100, 2, 5)], limits) is not None  # 2% failed


def test_the_call_back_check_fails_when_opted_in_people_get_no_genuine_message() -> None:
    told = {
        counters.CALLBACK_OPTED_IN: 10,
        counters.CALLBACK_DUE: 8,
        counters.CALLBACK_MESSAGES: 9,
        counters.CALLBACK_DELIVERED: 9,
        counters.CALLBACK_RETURNED: 7,
    }
    passed = check_callbacks_delivered(told)
    assert passed.passed and not passed.skipped
    assert "10 opted in (8 due" in passed.detail and "7 came back" in passed.detail
    # Due a message, and none came (gateway unreachable, wave without its webhook_url).
    silent = check_callbacks_delivered({**told, counters.CALLBACK_MESSAGES: 0})
    assert not silent.passed and "no message reached the gateway" in silent.detail
    # Taken at the master, never handed to a worker's user.
    lost = check_callbacks_delivered({**told, counters.CALLBACK_DELIVERED: 0})
    assert not lost.passed and "9 to nobody listed" in lost.detail
    # A wrong secret: real gateways would refuse every message.
    forged = check_callbacks_delivered({**told, counters.CALLBACK_FORGED: 3})
    assert not forged.passed and "secret" in forged.detail
    # Nobody near enough their turn (a line longer than lead_s all run), or nobody opted in:
    # not measured, which fails the gate unless allowed.
    far = check_callbacks_delivered(
        {**told, counters.CALLBACK_DUE: 0, counters.CALLBACK_MESSAGES: 0}
    )
    assert far.skipped and "near enough" in far.detail
    assert check_callbacks_delivered({}).skipped
    judged = evaluate({}, [], [], bot_limited_min=0.5, admission_tolerance=0.2, callbacks=True)
    assert [r.name for r in judged if not r.passed][-1] == "callbacks_delivered"
    unjudged = evaluate({}, [], [], bot_limited_min=0.5, admission_tolerance=0.2)
    assert "callbacks_delivered" not in [r.name for r in unjudged]
