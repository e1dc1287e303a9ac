"""The autopilot in the offline model (`simulator/model/autopilot.py`, the law imported from
`queue_service.autopilot`), against the best fixed settings (`simulator/autopilot_sweep.py`).

The wave (`tests/helpers/scenarios/autopilot.toml`): the operator configured 400 sessions at
once and 200 admissions/s for an origin of 24 workers (about 34 sessions at once is its best),
and the origin loses half its workers ten minutes in. Model runs are deterministic (per seed),
so the figures below are exact for this code; the bounds say what is promised.

Measured (2026-12-07): the configured setting fails 97-98% of the origin's requests and
completes almost nobody; the autopilot settles 25 s after the opening and 5 s after the halving
(intervals of 10 s) and keeps the origin's errors under 2% from then on. Its goodput, of the
best fixed setting's, over four seeds: 80-82% before the halving (median 81%) and 95-97% after
it. The law before the return after a second cut in a row (loadtests/RESULTS.md): 77-81%
(median 80.5%) and 94-98%; before it paced admissions by at most the planned session and waited out
the signal window: 51% and 90% (the scenario's seed).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator

import pytest

from queue_service import autopilot as law
from simulator.autopilot_plan import plan_autopilot
from simulator.autopilot_sweep import (
    Run,
    Sweep,
    autopilot_run,
    capacity_phases,
    configured_run,
    converged_at,
    fixed_sweep,
    origin_error_share,
)
from simulator.model import autopilot as model_autopilot
from simulator.scenario import Scenario, load_scenario
from tests.helpers.paths import TEST_SCENARIOS

pytestmark = pytest.mark.slow  # some forty model runs of a 20-minute wave

SCENARIO = TEST_SCENARIOS / "autopilot.toml"
GOODPUT_SHARE = 0.8
"""The autopilot's goodput against the best fixed setting of the phase (issue 23)."""
GOODPUT_SHARE_WORST = 0.75
"""... and no seed below this (the law before 2026-12-07 had one seed at 0.77)."""
SEEDS = (None, 1, 2, 3)
"""The scenario's own seed and three more (a model run of this wave: about half a second)."""
SETTLE_INTERVALS = 3
"""Within this many decisions of a capacity change the origin is healthy again for good."""


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(SCENARIO)


@pytest.fixture(scope="module")
def sweep(scenario: Scenario) -> Sweep:
    return fixed_sweep(scenario)


@pytest.fixture(scope="module")
def autopilot(seeded: list[Run]) -> Run:
    """The run with the scenario's own seed."""
    return seeded[SEEDS.index(None)]


@pytest.fixture(scope="module")
def seeded(scenario: Scenario) -> list[Run]:
    """The autopilot on the same wave with the people's draws of several seeds: one seed's
    goodput moves by a few points with the moment a cut happens to fall (the scenario's seed
    and 1-3, 2026-12-07: 0.80-0.82 before the halving, 0.95-0.97 after it)."""
    return [autopilot_run(scenario, seed=seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def naive(scenario: Scenario) -> Run:
    return configured_run(scenario)


def goodput_shares(scenario: Scenario, run: Run, sweep: Sweep) -> list[float]:
    limit = scenario.autopilot.error_target
    return [
        run.phases[i].goodput / sweep.best(i, error_limit=limit).phases[i].goodput
        for i in range(len(capacity_phases(scenario)))
    ]


def settle_times(scenario: Scenario, run: Run) -> list[float | None]:
    limit = scenario.autopilot.error_target
    times = []
    for phase in capacity_phases(scenario):
        at = converged_at(run, phase, limit)
        times.append(None if at is None else at - phase.start_s)
    return times


def test_the_operators_configured_setting_ruins_the_origin(
    scenario: Scenario, naive: Run, sweep: Sweep
) -> None:
    for i, phase in enumerate(naive.phases):
        best = sweep.best(i, error_limit=scenario.autopilot.error_target).phases[i]
        assert phase.error_share > 0.5
        assert phase.goodput < 0.1 * best.goodput


def test_the_autopilot_settles_within_intervals_of_each_capacity_change(
    scenario: Scenario, autopilot: Run
) -> None:
    interval = scenario.autopilot.interval_s
    for phase, settled in zip(
        capacity_phases(scenario), settle_times(scenario, autopilot), strict=True
    ):
        assert settled is not None, f"never settled in {phase}"
        assert settled <= SETTLE_INTERVALS * interval
        errors_after = origin_error_share(autopilot, phase.start_s + settled, phase.end_s)
        assert errors_after < scenario.autopilot.error_target


def test_the_autopilot_follows_the_halving_down(scenario: Scenario, autopilot: Run) -> None:
    first, second = capacity_phases(scenario)
    before = [
        d.target for d in autopilot.record.autopilot if first.end_s - 100 <= d.t < first.end_s
    ]
    after = [
        d.target for d in autopilot.record.autopilot if second.start_s < d.t <= second.start_s + 30
    ]
    assert min(after) <= 0.6 * max(before)


def phase_shares(scenario: Scenario, runs: list[Run], sweep: Sweep, phase: int) -> list[float]:
    return sorted(goodput_shares(scenario, run, sweep)[phase] for run in runs)


def test_the_autopilot_keeps_most_of_the_best_fixed_goodput_after_the_halving(
    scenario: Scenario, seeded: list[Run], sweep: Sweep
) -> None:
    shares = phase_shares(scenario, seeded, sweep, 1)
    assert statistics.median(shares) >= GOODPUT_SHARE, shares
    assert shares[0] >= GOODPUT_SHARE_WORST, shares


def test_the_autopilot_keeps_most_of_the_best_fixed_goodput_after_an_overload_at_the_opening(
    scenario: Scenario, seeded: list[Run], sweep: Sweep
) -> None:
    """After the opening's overload the measured session time reads 14 s for minutes against
    2.5 s once the origin is healthy; the rate is paced by at most the planned session
    (`autopilot.pacing_session_s`), so the target is used and grows again (measured over the
    four seeds, 2026-12-07: 0.80-0.82, median 0.81; 51% for the scenario's seed when the rate
    followed the measured session alone)."""
    shares = phase_shares(scenario, seeded, sweep, 0)
    assert statistics.median(shares) >= GOODPUT_SHARE, shares
    assert shares[0] >= GOODPUT_SHARE_WORST, shares


@pytest.fixture
def held_autopilot(monkeypatch: pytest.MonkeyPatch, scenario: Scenario) -> Iterator[Run]:
    """A broken controller: `decide` always holds the last target."""

    def hold(config: law.AutopilotConfig, state: law.ControllerState, signals: law.Signals,
             load: law.Load, now: float) -> law.Decision:  # fmt: skip
        rate = law.rate_for(state.target, load.session_s)
        return law.Decision("hold", state.target, rate, "broken", state)

    monkeypatch.setattr(model_autopilot, "decide", hold)
    yield autopilot_run(scenario)


def test_the_claims_fail_when_the_controller_is_broken(
    scenario: Scenario, held_autopilot: Run, sweep: Sweep
) -> None:
    assert goodput_shares(scenario, held_autopilot, sweep)[1] < GOODPUT_SHARE
    assert None in settle_times(scenario, held_autopilot)


def test_started_at_the_planners_bounds_it_keeps_most_of_the_best_fixed_goodput(
    scenario: Scenario, sweep: Sweep
) -> None:
    """The fix for the opening's overload is the operator's: start near what the origin can
    take. `gelombang plan --autopilot`'s bounds do."""
    planned = plan_autopilot(scenario)
    assert planned.config.max_active < scenario.wave.max_active / 5
    assert min(goodput_shares(planned.scenario, planned.run, sweep)) >= GOODPUT_SHARE
