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
- Goodput. The origin cannot complete more than capacity / mean service time of one
  registration at no load (6 / 0.52 s = 11.5/s once halved): no fixed setting can do
  better. Over the converged window the autopilot completes at least 25% of that, and at
  least three times what the fixed setting does plus one a second (its origin is down:
  measured 0-0.08/s). Measured: 36-62% over six runs with the law before its signal window
  (a cut was followed by more cuts before the first had shown, down to the floor in one run
  of six); 34-72% (full phase) and 55-62% (halved) with the law now. The issue's 80% is not
  reached in phases this short (see loadtests/RESULTS.md): the additive increase climbs one
  session every other interval, and the sample origin's workers slow down with any backlog.

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
    assert halved_on.goodput_share >= 0.25, (halved_on, describe(runs["on"]))
    assert halved_on.goodput_per_s >= 3 * halved_off.goodput_per_s + 1.0, (
        halved_on,
        halved_off,
    )
