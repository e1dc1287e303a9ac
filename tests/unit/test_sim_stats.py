"""The statistics of a run: every function against values worked out by hand or by brute
force, and the live driver depending on them alone."""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys

import pytest

from simulator.records import RegistrantOutcome, RunMeta, RunRecord, TimeSeries
from simulator.stats import (
    count_inversions,
    eta_errors,
    fairness,
    gave_up_other,
    kendall_tau_b,
    percentile,
    post_opening_admitted,
    ranks,
    summarise,
    waits,
)
from tests.helpers.known_runs import PREQUEUE_ORDER, WALL_T0, known_run

# ----------------------------------------------------------------------------- pure functions


def test_percentiles_use_nearest_rank() -> None:
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile(values, 0.0) == 1
    assert percentile([7.0, 3.0, 5.0], 0.5) == 5.0
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError):
        percentile(values, 1.5)


def test_count_inversions_matches_brute_force() -> None:
    assert count_inversions([]) == 0
    assert count_inversions([4.0]) == 0
    assert count_inversions([1, 2, 3]) == 0
    assert count_inversions([3, 2, 1]) == 3
    assert count_inversions([2, 2, 1]) == 2  # ties are not inversions
    rng = random.Random(3)
    for _ in range(50):
        values = [float(rng.randint(0, 9)) for _ in range(rng.randint(0, 60))]
        expected = sum(1 for a, b in itertools.combinations(values, 2) if a > b)
        assert count_inversions(values) == expected


def _brute_force_tau_b(xs: list[float], ys: list[float]) -> float | None:
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(xs)), 2):
        dx, dy = xs[i] - xs[j], ys[i] - ys[j]
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
        elif dx == 0 and dy != 0:
            ties_x += 1
        elif dy == 0 and dx != 0:
            ties_y += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return None if denominator == 0 else (concordant - discordant) / denominator


def test_kendall_tau_b_for_known_permutations() -> None:
    assert kendall_tau_b([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one swapped neighbour pair: 5 concordant, 1 discordant of 6 -> 4/6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # 1 2 3 / 2 1 3 with a tie in x: (x: 1,1,2) -> hand value
    # pairs: (1,2)(1,1): tie in x; (1,2)-(2,3): concordant; (1,1)-(2,3): concordant
    # tau_b = 2 / sqrt((3 - 1) * 3)
    assert kendall_tau_b([1, 1, 2], [2, 1, 3]) == pytest.approx(2 / math.sqrt(6))
    assert kendall_tau_b([1], [1]) is None
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError):
        kendall_tau_b([1, 2], [1])


def test_kendall_tau_b_matches_the_definition_with_ties() -> None:
    rng = random.Random(9)
    for _ in range(50):
        n = rng.randint(2, 40)
        xs = [float(rng.randint(0, 6)) for _ in range(n)]
        ys = [float(rng.randint(0, 6)) for _ in range(n)]
        expected = _brute_force_tau_b(xs, ys)
        got = kendall_tau_b(xs, ys)
        assert (expected is None and got is None) or got == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_b_is_fast_for_large_samples() -> None:
    rng = random.Random(1)
    xs = list(range(200_000))
    ys = [x + rng.random() * 50 for x in xs]
    tau = kendall_tau_b(xs, ys)
    assert tau is not None and 0.99 < tau < 1.0


def test_ranks_are_zero_based_and_break_ties_by_position() -> None:
    assert ranks([]) == []
    assert ranks([30.0, 10.0, 20.0]) == [2, 0, 1]
    assert ranks([5.0, 5.0, 1.0]) == [1, 2, 0]


# ----------------------------------------------------------------------------- run samples


def _record(mode: str, outcomes: list[RegistrantOutcome], opens_at_s: float = 10.0) -> RunRecord:
    meta = RunMeta(
        mode=mode,
        scenario="hand",
        seed=1,
        source="live",
        population=len(outcomes),
        duration_s=60.0,
        opens_at_s=opens_at_s,
        prequeue_s=10.0,
    )
    return RunRecord.build(meta, TimeSeries.empty(60.0), outcomes)


def test_waits_run_from_joining_or_else_from_arriving_to_admission() -> None:
    record = _record(
        "queued",
        [
            RegistrantOutcome(0, False, arrival_t=1.0, joined_t=2.0, admitted_t=12.0),
            RegistrantOutcome(1, False, arrival_t=3.0, admitted_t=7.5),  # never joined: direct
            RegistrantOutcome(2, False, arrival_t=4.0, joined_t=5.0),  # never admitted
        ],
    )
    assert waits(record) == [10.0, 4.5]


def test_eta_errors_are_actual_minus_estimate_after_opening_only() -> None:
    record = _record(
        "queued",
        [
            RegistrantOutcome(0, False, 11.0, joined_t=11.0, eta_at_join_s=5.0, admitted_t=19.0),
            RegistrantOutcome(1, False, 12.0, joined_t=12.0, eta_at_join_s=9.0, admitted_t=18.0),
            # pre-queue: no estimate is shown, even if one is recorded
            RegistrantOutcome(
                2, False, 2.0, joined_t=2.0, prequeue=True, eta_at_join_s=1.0, admitted_t=10.0
            ),
            RegistrantOutcome(3, False, 13.0, joined_t=13.0, admitted_t=20.0),  # no estimate
            RegistrantOutcome(4, False, 14.0, joined_t=14.0, eta_at_join_s=3.0),  # not admitted
        ],
    )
    assert eta_errors(record) == [3.0, -3.0]


def test_post_opening_admitted_leaves_out_the_prequeue_early_joiners_and_the_unadmitted() -> None:
    outcomes = [
        RegistrantOutcome(0, False, 11.0, joined_t=11.0, admitted_t=15.0),
        RegistrantOutcome(1, False, 2.0, joined_t=2.0, prequeue=True, admitted_t=10.0),
        RegistrantOutcome(2, False, 9.0, joined_t=9.0, admitted_t=12.0),  # before opening
        RegistrantOutcome(3, False, 12.0, joined_t=12.0),
        RegistrantOutcome(4, False, 10.0, joined_t=10.0, admitted_t=13.0),  # at opening
    ]
    assert [o.index for o in post_opening_admitted(_record("queued", outcomes))] == [0, 4]


def test_gave_up_other_counts_the_reasons_without_a_figure_of_their_own() -> None:
    reasons = {"errors": 5, "balked": 1, "reneged": 2, "run_ended": 7, "rejected": 3}
    assert gave_up_other(reasons | {"abandoned": 4}) == 7
    assert gave_up_other({}) == 0


# ----------------------------------------------------------------------------- a known run


def test_summary_numbers_come_from_the_outcomes() -> None:
    queued = summarise(known_run("queued", errors_per_s=0, peak=15))
    post_waits = list(range(1, 101))
    pre_waits = [10.0 + r * 0.1 - k for r, k in enumerate(PREQUEUE_ORDER)]
    every = sorted([float(w) for w in post_waits] + pre_waits)
    assert queued["wait_s"]["p50"] == pytest.approx(percentile(every, 0.5))
    assert queued["wait_s"]["p95"] == pytest.approx(every[math.ceil(0.95 * 110) - 1])
    assert queued["wait_s"]["p99"] == pytest.approx(every[math.ceil(0.99 * 110) - 1])
    assert queued["completed"] == 110
    assert queued["peak_origin_inflight"] == 15 and queued["origin_capacity"] == 20
    assert queued["peak_over_capacity"] == 0.75
    assert queued["eta_error_s"]["median"] == -2.0  # every estimate 2 s too long
    assert queued["eta_error_s"]["median_abs"] == 2.0
    assert queued["time_to_complete_s"]["p50"] == pytest.approx(
        percentile([w + 1.0 for w in every], 0.5)
    )
    direct = summarise(known_run("direct", errors_per_s=3, peak=45))
    assert direct["origin_errors"] == 90  # 3/s for 30 s
    assert direct["peak_over_capacity"] == 2.25


def test_summary_splits_giving_up_as_the_figures_do_and_keeps_the_settings() -> None:
    outcomes = [
        RegistrantOutcome(0, False, 1.0, completed_t=5.0, requests=6),
        RegistrantOutcome(1, False, 1.0, gave_up_t=3.0, gave_up_reason="errors", requests=4),
        RegistrantOutcome(2, False, 1.0, gave_up_t=3.0, gave_up_reason="balked", requests=1),
        RegistrantOutcome(3, False, 1.0, gave_up_t=3.0, gave_up_reason="reneged", requests=2),
        RegistrantOutcome(4, False, 1.0, gave_up_t=3.0, gave_up_reason="rejected", requests=3),
        RegistrantOutcome(5, False, 1.0, gave_up_t=9.0, gave_up_reason="run_ended", requests=5),
        RegistrantOutcome(6, False, 1.0, gave_up_t=9.0, gave_up_reason="run_ended", requests=5),
    ]
    summary = summarise(_record("direct", outcomes))
    assert summary["gave_up_errors"] == 1
    assert summary["gave_up_balked_reneged"] == 2
    assert summary["gave_up_other"] == 1
    assert summary["still_trying_at_end"] == 2
    assert summary["requests"] == 26
    assert summary["peak_live_registrants"] is None  # set by the live driver only
    assert summary["run"] == "without Gelombang"
    queued = summarise(known_run("queued", 0, 15))
    assert queued["run"] == "through Gelombang"
    assert queued["settings"] == {
        "registrants": 110,
        "seed": 1,
        "duration_s": 40.0,
        "opens_at_s": 10.0,
        "admit_rate": 4.0,
        "admit_burst": 4.0,
        "max_active": 0,
        "session_ttl_s": 30.0,
        "quota": None,
        "prequeue_s": 10.0,
        "abandon_after_s": 45.0,
        "origin_capacity": 20,
    }


def test_a_small_overtaken_share_keeps_its_digits() -> None:
    # 1,000 FIFO admissions but one neighbouring pair swapped: 1 of 499,500 pairs.
    outcomes = [
        RegistrantOutcome(k, False, 10.0 + k, joined_t=10.0 + k, admitted_t=20.0 + k)
        for k in range(1000)
    ]
    outcomes[0].admitted_t, outcomes[1].admitted_t = 21.0, 20.0
    summary = summarise(_record("queued", outcomes))
    assert summary["fairness"]["overtaken_pair_share"] == round(1 / 499_500, 6) > 0


def test_fairness_sees_fifo_the_prequeue_block_and_reversals() -> None:
    queued = fairness(known_run("queued", errors_per_s=0, peak=15))
    assert queued["post_open_admitted"] == 100
    assert queued["tau_b"] == 1.0
    assert queued["overtaken_pair_share"] == 0.0
    assert queued["prequeue_admitted_first"] is True
    assert queued["prequeue_admitted"] == 10
    assert queued["prequeue_tau_b"] == pytest.approx(
        kendall_tau_b(PREQUEUE_ORDER, list(range(10)))  # join time k, admission rank
    )
    direct = fairness(known_run("direct", errors_per_s=3, peak=45))
    assert direct["tau_b"] == -1.0
    assert direct["overtaken_pair_share"] == 1.0
    assert direct["max_rank_displacement"] == 99
    assert direct["prequeue_admitted_first"] is True


# ----------------------------------------------------------------------------- dependencies


@pytest.mark.slow  # starts a process
def test_the_live_driver_depends_on_the_statistics_but_not_on_charts_or_the_page() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, simulator.driver; "
            "print(' '.join(m for m in sys.modules if m.startswith('simulator')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert "simulator.stats" in loaded
    for module in ("simulator.charts", "simulator.report", "simulator.summary"):
        assert module not in loaded, f"simulator.driver imports {module}"


# ------------------------------------------------------------- figures with one definition


def signed_pair(prequeue_noticed: float, later_noticed: float, prequeue_iat: int) -> RunRecord:
    """A pre-queue registrant and one who joined after opening, both admitted in the signed
    second 10 of the run (the queue admits the pre-queue block first within it); their
    `admitted_t` is what the driver records: mid-second, or the poll that noticed, if sooner."""
    record = known_run("queued", 0, 15)
    pre, later = record.registrants[0], record.registrants[10]
    for outcome, noticed, iat, ticket in (
        (pre, prequeue_noticed, prequeue_iat, 1),
        (later, later_noticed, 10, 11),
    ):
        signed = iat + 0.5
        outcome.admitted_t = min(noticed, max(outcome.joined_t or 0.0, signed))
        outcome.admitted_iat, outcome.ticket = WALL_T0 + iat, ticket
    later.joined_t = later.arrival_t = 10.1
    record.registrants[:] = [pre, later]
    return RunRecord.build(record.meta, record.series, record.registrants)


def test_the_prequeue_line_is_judged_on_signed_seconds_and_does_not_flip_on_a_tie() -> None:
    """Both admitted in the same signed second; the later arrival's poll happened to notice
    first (10.3 s) while the pre-queue holder's time is the mid-second (10.5 s): the old
    figure said "no" although the queue kept its order. A pre-queue admission signed in a
    later second than someone who joined after opening is a real "no"."""
    tie = signed_pair(prequeue_noticed=10.9, later_noticed=10.3, prequeue_iat=10)
    assert tie.registrants[0].admitted_t > tie.registrants[1].admitted_t  # type: ignore[operator]
    assert fairness(tie)["prequeue_admitted_first"] is True
    late = signed_pair(prequeue_noticed=11.9, later_noticed=10.3, prequeue_iat=11)
    assert fairness(late)["prequeue_admitted_first"] is False


def test_every_figure_means_the_same_in_both_runs() -> None:
    """A figure the run without Gelombang cannot have is "–" there, never a number with
    another meaning: its wait to reach the origin runs on the same clock as the queue's."""
    direct = summarise(known_run("direct", errors_per_s=3, peak=45))
    queued = summarise(known_run("queued", errors_per_s=0, peak=15))
    for key in ("queue_admitted", "wait_s", "eta_error_s", "rate_limited_bot_share"):
        value = direct[key]
        assert value is None or all(v in (None, 0) for v in value.values()), key
    assert queued["wait_s"]["p50"] == 45.0  # joining to admission, pre-queue included
    # first attempt to first request served: without Gelombang, arriving to the first answer;
    # through it, arriving to the first answer after admission (here 0.5 s after)
    assert direct["origin_wait_s"]["n"] == queued["origin_wait_s"]["n"] == 110
    assert queued["origin_wait_s"]["p50"] == pytest.approx(queued["wait_s"]["p50"] + 0.5, abs=1)
    assert direct["reached_origin"] == queued["reached_origin"] == 110


def test_the_share_of_429s_that_went_to_bots_is_counted_not_assumed() -> None:
    queued = summarise(known_run("queued", errors_per_s=0, peak=15))
    assert queued["rate_limited_bot_share"] == pytest.approx(20 / 30, abs=1e-4)
    assert queued["bot_share"] == pytest.approx(1 / 110, abs=1e-4)


def test_eta_bias_is_shown_by_when_people_joined() -> None:
    """Everyone is told 2 s too much, except the last third, who wait 30 s longer than told:
    the overall median hides it, the late third's median shows it."""
    record = known_run("queued", errors_per_s=0, peak=15)
    later = [o for o in record.registrants if not o.prequeue]
    for outcome in later[67:]:
        outcome.eta_at_join_s = (outcome.wait_s or 0.0) - 30.0
    errors = summarise(record)["eta_error_s"]
    assert errors["median"] == -2.0
    assert errors["early_median"] == errors["middle_median"] == -2.0
    assert errors["late_median"] == 30.0
