"""Guarantee 13 against a real origin that changes under load (issue 23 item 5): a real
redis-server, `gelombang serve`, the sample origin requiring admission tokens, a real
Prometheus scraping it every second and the live driver sending ~1,200 synthetic registrants,
on a wave configured far above what the origin takes (admit_rate 60/s, max_active 150: the
operator's guess); 32 s after the start the origin loses half its workers (12 -> 6). The same
wave twice (loadtests/bench/autopilot.py, also `python -m loadtests.bench autopilot`): with
the autopilot on, and off at the operator's fixed setting.

What is asserted, and why these points:
- The opening. Before the opening there is no traffic, so no signal, and the autopilot holds
  the operator's 150; the opening's burst overloads the origin before the first signal shows
  it. The autopilot must bring it back within the full-capacity phase (measured: 14-24 s
  after the opening, 6-8 intervals of 3 s: each cut waits half a measured session, which
  the collapse itself lengthens). The fixed setting never recovers.
- The halving. The autopilot is converged from four intervals (12 s) after it: the origin's
  backlog shows as 504s after its 2 s timeout, in a signal over a 3 s window read at the next
  interval; the cut stops admissions until the admitted sessions drain and the window
  forgets the errors; a second cut may follow (loadtests/bench/autopilot.py,
  SETTLE_INTERVALS; measured 0.1-8.2 s over six runs until no interval is over 2%, peaks
  of 0-32% in between). From then to the end the origin answers under 2% 5xx (503 overload
  and 504 timeouts included; measured 0-0.65%) and no single interval goes above 10%; the
  fixed setting stays far above (measured 69-71%).
- Goodput, against the issue's measure: the best fixed setting of each phase, found by
  sweeping sixteen fixed settings in the offline model of the same run
  (`loadtests.bench.autopilot.model_baseline`: 15.5/s at 28 sessions before the halving,
  8.25/s at 13 after; the ceiling, capacity / service time at no load, is 23.1 and 11.5). Once
  halved the autopilot completes at least 60% of the best fixed setting (measured 87-95% over
  three runs with the law now, 76-87% with the law before the return after a second cut in a
  row), and at least three times what the operator's fixed setting does plus one a second (its
  origin is down: measured 0-0.08/s). The full phase is measured from convergence, a window of
  6-10 s after the opening's collapse in which the target climbs back from where the cuts
  left it: at least 35% (measured 67-87%; 50-108% before); the model, whose phases last ten
  minutes, reaches 80-82% and 95-97% (tests/unit/test_model_autopilot.py), and over these
  30-second phases 23-25% (the opening collapse counted) and 71-84%. The issue's 80% in each
  phase is judged over longer phases by the benchmark (loadtests/RESULTS.md: 96% and 94%).

`exclusive`: its ~1,200 registrants, twice, load the machine enough to make the tests beside
it late (seen: a driver test's completions cut off, a benchmark's polls shed).

With `decide` broken (always hold) the autopilot run is the fixed run: every assertion on it
fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.bench.autopilot import (
    SETTLE_INTERVALS,
    Phase,
    Run,
    Setup,
    phases,
    run_once,
    timeline,
)
from tests.helpers.tools import require_tool

pytestmark = [pytest.mark.timeout(420), pytest.mark.exclusive]

SETUP = Setup()
SETTLE_AFTER_HALVING_S = SETTLE_INTERVALS * SETUP.interval_s
ERROR_TARGET = SETUP.error_target


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    require_tool("prometheus", package="prometheus")
    work = tmp_path_factory.mktemp("autopilot-origin")
    yield {mode: run_once(mode, Path(work / mode), SETUP) for mode in ("on", "off")}


def measured(run: Run) -> tuple[Phase, Phase]:
    # the full phase from its start (convergence is what it shows), the halved one from the
    # convergence point
    full, halved = phases(run, (0.0, SETTLE_AFTER_HALVING_S))
    return full, halved


def from_convergence(run: Run) -> Phase:
    """The full phase from the autopilot's convergence after the opening to the halving."""
    full, _ = measured(run)
    assert full.converged_after_s is not None, describe(run)
    converged, _ = phases(run, (full.converged_after_s, SETTLE_AFTER_HALVING_S))
    return converged


def describe(run: Run) -> str:
    return f"autopilot {run.mode}:\n{timeline(run)}"


def test_the_autopilot_recovers_from_the_opening_and_the_fixed_setting_does_not(
    runs: dict[str, Run],
) -> None:
    full_on, _ = measured(runs["on"])
    full_off, _ = measured(runs["off"])
    assert full_on.converged_after_s is not None, describe(runs["on"])
    assert full_on.start_s + full_on.converged_after_s < SETUP.halve_at_s
    assert full_off.converged_after_s is None, describe(runs["off"])
    # it came down from the operator's guess
    targets = [d.target for d in runs["on"].decisions if d.t < SETUP.halve_at_s]
    assert min(targets) < 150 / 4, runs["on"].decisions


def test_after_the_halving_the_origin_answers_under_two_percent_errors(
    runs: dict[str, Run],
) -> None:
    _, halved_on = measured(runs["on"])
    _, halved_off = measured(runs["off"])
    assert halved_on.answers > 200, describe(runs["on"])  # it served, it was not idle
    assert halved_on.error_ratio < ERROR_TARGET, describe(runs["on"])
    assert halved_on.peak_error_ratio < 5 * ERROR_TARGET, describe(runs["on"])  # no interval
    assert halved_off.error_ratio > 10 * ERROR_TARGET, describe(runs["off"])


def test_the_autopilot_completes_far_more_registrations_than_the_fixed_setting(
    runs: dict[str, Run],
) -> None:
    _, halved_on = measured(runs["on"])
    _, halved_off = measured(runs["off"])
    assert halved_on.share_of_best_fixed >= 0.6, (halved_on, describe(runs["on"]))
    assert halved_on.goodput_per_s >= 3 * halved_off.goodput_per_s + 1.0, (
        halved_on,
        halved_off,
    )


def test_the_autopilot_keeps_most_of_the_best_fixed_goodput_of_each_phase(
    runs: dict[str, Run],
) -> None:
    """Issue 23's measure: the model's best fixed setting of the phase (`model_baseline`)."""
    full = from_convergence(runs["on"])
    _, halved = measured(runs["on"])
    assert full.share_of_best_fixed >= 0.35, (full, describe(runs["on"]))
    assert halved.share_of_best_fixed >= 0.6, (halved, describe(runs["on"]))
