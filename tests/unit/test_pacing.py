"""The ETA estimator (queue_service.pacing.PaceEstimate), the one definition the service, the
model and the planner share: honest from the first second, learns from what admission does,
and is not fooled by a pause or an empty line."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

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


# -- what the ETA promises against what happens, when max_active binds -------------------------


@dataclass
class Joiner:
    joined_t: float
    eta_s: float
    waited_s: float | None = None


def run_wave(
    pace: PaceEstimate, *, rate: float, max_active: int, hold: Callable[[random.Random], float],
    minutes: float, ahead: int = 200, dt: float = 0.1,
) -> tuple[list[Joiner], list[float]]:  # fmt: skip
    """A wave with a standing backlog, admission exactly as the service does it (a token
    bucket of one second's burst, at most `max_active` sessions, each held `hold()` seconds),
    observed every 100 ms. Once a minute somebody joins `ahead` places behind the cursor and
    is told `ahead` x seconds_per_place; returns them with the wait they really had, and the
    wait per place shown each minute."""
    rng = random.Random(7)
    tokens, admitted, ended, cursor = rate, 0, 0, 0
    sessions: list[float] = []  # when each live session ends
    joiners: dict[int, Joiner] = {}
    shown: list[float] = []
    per_minute = round(60 / dt)
    for k in range(round(minutes * 60 / dt)):
        t = k * dt
        while sessions and sessions[0] <= t:
            heapq.heappop(sessions)
            ended += 1
        tokens = min(rate, tokens + rate * dt)
        for _ in range(min(int(tokens), max_active - len(sessions))):
            heapq.heappush(sessions, t + hold(rng))
            tokens -= 1
            admitted += 1
            cursor += 1
            if cursor in joiners:
                joiners[cursor].waited_s = t - joiners[cursor].joined_t
        pace.observe(t, admitted, 0, 10 * ahead, len(sessions), ended)
        if k % per_minute == 0:
            shown.append(pace.seconds_per_place)
            joiners[cursor + ahead] = Joiner(t, pacing.eta_s(ahead, pace.seconds_per_place))
    return [j for j in joiners.values() if j.waited_s is not None], shown


def test_eta_never_jumps_by_orders_of_magnitude_when_sessions_are_never_used() -> None:
    """max_active binds and nobody uses their admission: every slot is held until its TTL
    (900 s), so admissions come in clumps of 50 every 15 minutes. Measured over seconds that
    swung the ETA from hours to weeks and back (6 h -> 162 h -> 0.4 h in a live run); now it
    follows Little's law (50 slots / 900 s = 18 s a place), moves at most x2 a minute, and the
    waits people were told are the waits they had, within a factor of two."""
    ttl = 900.0
    pace = PaceEstimate(PacePrior(5.0, 50, ttl / 2))  # expected_session_s unset: TTL/2
    joiners, shown = run_wave(pace, rate=5.0, max_active=50, hold=lambda _: ttl, minutes=150)
    steps = [b / a for a, b in itertools.pairwise(shown)]
    assert max(steps) <= 2.0 and min(steps) >= 0.5
    settled = shown[16:]  # after the first sessions lapsed
    assert max(settled) / min(settled) < 1.5
    assert all(0.7 * ttl / 50 <= s <= 1.3 * ttl / 50 for s in settled)
    assert len(joiners) > 10
    for j in joiners:
        assert 0.7 <= j.waited_s / j.eta_s <= 2.05, j  # type: ignore[operator]


def test_eta_matches_real_waits_with_short_sessions_and_ghosts_holding_slots() -> None:
    """Sessions of about 5 minutes, and one admission in five never used (held to its TTL):
    the ETA told at joining is within 30% of the wait that followed."""

    def hold(rng: random.Random) -> float:
        return 900.0 if rng.random() < 0.2 else min(900.0, rng.lognormvariate(math.log(300), 1))

    pace = PaceEstimate(PacePrior(5.0, 50, 450.0))
    joiners, shown = run_wave(pace, rate=5.0, max_active=50, hold=hold, minutes=120)
    steps = [b / a for a, b in itertools.pairwise(shown)]
    assert max(steps) <= 2.0 and min(steps) >= 0.5
    later = [j for j in joiners if j.joined_t >= 600]
    assert len(later) > 60
    ratios = [j.waited_s / j.eta_s for j in later]  # type: ignore[operator]
    assert min(ratios) >= 0.7 and max(ratios) <= 1.3, (min(ratios), max(ratios))


def test_a_configuration_change_counts_at_once_despite_the_damping() -> None:
    pace = PaceEstimate(PacePrior(10.0, 0, 5.0))
    feed(pace, 60.0, 10.0)
    assert pace.seconds_per_place == pytest.approx(0.1, rel=0.02)
    pace.prior = PacePrior(2.0, 0, 5.0)  # the SRE lowers admit_rate: no wait is promised short
    assert pace.seconds_per_place == pytest.approx(0.5, rel=0.02)
    feed(pace, 1.0, 2.0, start=61.0)
    assert pace.seconds_per_place >= 0.5 * 0.98
