"""The ETA estimator (queue_service.pacing.PaceEstimate), the one definition the service, the
model and the planner share: honest from the first second, learns from what admission does,
and is not fooled by a pause or an empty line."""

from __future__ import annotations

import pytest

from queue_service import pacing
from queue_service.pacing import PaceEstimate, PacePrior


def feed(
    pace: PaceEstimate, seconds: float, rate: float, *, waiting: int = 500, active: int = 0,
    hold_s: float = 0.0, skip_share: float = 0.0, admitting: bool = True, start: float = 0.0,
    dt: float = 0.05,
) -> float:  # fmt: skip
    """Counts as the admission loop sees them every 50 ms."""
    t, admitted, skipped, ended = start, 0.0, 0.0, 0.0
    if pace._last is not None:
        _, a, s, _, _, e = pace._last
        admitted, skipped, ended = float(a), float(s), float(e)
    steps = round(seconds / dt)
    for _ in range(steps + 1):
        pace.observe(t, int(admitted), int(skipped), waiting, active, int(ended), admitting)
        t += dt
        if admitting:
            admitted += rate * dt
            skipped += rate * dt * skip_share / (1 - skip_share)
        if hold_s:
            ended += active / hold_s * dt
    return t


def test_before_anything_is_measured_the_prior_is_the_configuration() -> None:
    assert PaceEstimate(PacePrior(20, 0, 5)).seconds_per_place == pytest.approx(1 / 20)
    # max_active binds: 40 slots of 5 s sessions admit 8/s, not 20
    assert PaceEstimate(PacePrior(20, 40, 5)).seconds_per_place == pytest.approx(1 / 8)


def test_measured_throughput_takes_over_without_starting_from_zero() -> None:
    pace = PaceEstimate(PacePrior(20, 0, 5))
    feed(pace, 2.0, 10.0)
    # two seconds in: no drag towards 0 (a plain EWMA from 0 would say ~0.7/s here)
    assert pace.measured_per_s == pytest.approx(10.0, rel=0.05)
    assert 10.0 < pace.admissions_per_s < 20.0
    feed(pace, 60.0, 10.0, start=2.05)
    assert pace.admissions_per_s == pytest.approx(10.0, rel=0.03)


def test_a_pause_or_an_empty_line_teaches_nothing() -> None:
    pace = PaceEstimate(PacePrior(20, 0, 5))
    end = feed(pace, 60.0, 10.0)
    before = pace.admissions_per_s
    end = feed(pace, 30.0, 0.0, admitting=False, start=end)  # paused: nobody admitted
    assert pace.admissions_per_s == pytest.approx(before, rel=0.01)
    feed(pace, 30.0, 0.0, waiting=0, start=end)  # open, but nobody waits
    assert pace.admissions_per_s == pytest.approx(before, rel=0.01)


def test_the_skip_share_discounts_the_places_ahead() -> None:
    pace = PaceEstimate(PacePrior(20, 0, 5))
    feed(pace, 60.0, 10.0, skip_share=0.25)
    assert pace.skip_fraction == pytest.approx(0.25, abs=0.02)
    assert pace.seconds_per_place == pytest.approx(0.75 / 10.0, rel=0.05)
    assert pacing.eta_s(1000, pace.seconds_per_place) == pytest.approx(75, rel=0.05)


def test_the_slot_hold_is_learnt_from_sessions_ending() -> None:
    """expected_session_s said 5 s; slots are really held 2 s: 40 slots admit 20/s, and the
    prior corrects itself as soon as sessions end (before measured admissions dominate)."""
    pace = PaceEstimate(PacePrior(100, 40, 5))
    assert pace.prior_per_s == pytest.approx(8.0)
    feed(pace, 3.0, 20.0, active=40, hold_s=2.0)
    assert pace.hold_s == pytest.approx(2.0, rel=0.05)
    assert pace.prior_per_s == pytest.approx(20.0, rel=0.05)


def test_a_burst_at_opening_or_on_resume_never_promises_more_than_admit_rate() -> None:
    """The bucket lets admit_burst through at once; measured over a few seconds that looks
    like a high rate, but the line will move at admit_rate, and the ETA says so."""
    pace = PaceEstimate(PacePrior(0.01, 0, 0))
    pace.observe(0.0, 0, 0, 6)
    pace.observe(0.05, 1, 0, 5)  # the one token of the burst, spent at once
    for k in range(2, 100):
        pace.observe(k * 0.05, 1, 0, 5)
    assert pace.measured_per_s > 0.1  # what a naive estimate would promise
    assert pace.admissions_per_s <= 0.01
    assert pacing.eta_s(4, pace.seconds_per_place) >= 400
