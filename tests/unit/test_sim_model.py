"""The offline model runs the queue's admission policy: FIFO after opening, the pre-queue block
shuffled and first, the token bucket, max_active, quota, abandoned tickets skipped for free."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from simulator.commands import plan
from simulator.model import run_model
from simulator.records import RunRecord
from simulator.scenario import Scenario, load_scenario
from simulator.stats import fairness, kendall_tau_b


@pytest.fixture(scope="module")
def laptop() -> Scenario:
    return load_scenario("laptop")


@pytest.fixture(scope="module")
def laptop_run(laptop: Scenario) -> RunRecord:
    return run_model(laptop)


def test_post_opening_arrivals_are_admitted_first_come_first_served(laptop_run: RunRecord) -> None:
    result = fairness(laptop_run)
    assert result["post_open_admitted"] > 300
    assert result["tau_b"] == 1.0
    assert result["overtaken_pair_share"] == 0.0
    assert result["max_rank_displacement"] == 0
    opens, closes = laptop_run.meta.opens_at_s, 100.0
    for o in laptop_run.registrants:
        if o.admitted_t is not None:
            assert o.joined_t is not None and o.joined_t <= o.admitted_t
            assert opens <= o.admitted_t < closes


def test_the_prequeue_block_goes_first_in_a_uniformly_random_order(laptop: Scenario) -> None:
    taus = []
    for seed in range(4):
        record = run_model(laptop, seed=seed)
        result = fairness(record)
        assert result["prequeue_admitted"] > 100
        assert result["prequeue_admitted_first"] is True
        taus.append(result["prequeue_tau_b"])
    # Under a uniform shuffle tau has mean 0 and sd about 0.05 for ~150 people.
    assert all(abs(t) < 0.2 for t in taus)
    assert abs(sum(taus) / len(taus)) < 0.1


def test_admissions_never_exceed_the_token_bucket(laptop: Scenario, laptop_run: RunRecord) -> None:
    admissions = laptop_run.series.admissions
    rate, burst, step = laptop.wave.admit_rate, laptop.wave.burst, laptop_run.series.step_s
    for start in range(len(admissions)):
        total = 0
        for end in range(start, len(admissions)):
            total += admissions[end]
            # a window of whole bins spans at most (bins * step) seconds, plus the burst
            assert total <= rate * (end - start + 1) * step + burst
    assert sum(admissions) == laptop_run.totals.queue_admitted


def test_active_sessions_never_exceed_max_active(laptop: Scenario, laptop_run: RunRecord) -> None:
    assert max(laptop_run.series.active) == laptop.wave.max_active
    assert min(laptop_run.series.active) >= 0
    unlimited = run_model(laptop, max_active=0)
    assert max(unlimited.series.active) > laptop.wave.max_active


def test_quota_stops_admission_exactly(laptop: Scenario) -> None:
    record = run_model(laptop, quota=300)
    assert record.totals.queue_admitted == 300
    assert record.totals.gave_up.get("rejected", 0) > 0
    last = max(k for k, n in enumerate(record.series.admissions) if n)
    assert all(n == 0 for n in record.series.admissions[last + 1 :])


def test_abandoned_tickets_are_skipped_at_no_cost(laptop: Scenario) -> None:
    impatient = dataclasses.replace(
        laptop,
        population_mix=dataclasses.replace(
            laptop.population_mix,
            patience_median_s=2.0,
            patience_sigma=0.0,
            bot_share=0.0,
            joki_share=0.0,
        ),
        behaviour=dataclasses.replace(laptop.behaviour, return_later_p=0.0, balk_scale_s=1e12),
    )
    # Leavers who say so: every admission token goes to someone who is there.
    leaving = dataclasses.replace(
        impatient, behaviour=dataclasses.replace(impatient.behaviour, silent_abandon_share=0.0)
    )
    record = run_model(leaving, sample_every=1)
    present = sum(o.admitted_t is not None for o in record.registrants)
    assert record.totals.gave_up["reneged"] > 1000
    assert record.totals.admitted == present
    # Silent abandoners keep their ticket until abandon_after_s: admissions reach absent people.
    silent = dataclasses.replace(
        impatient, behaviour=dataclasses.replace(impatient.behaviour, silent_abandon_share=1.0)
    )
    record = run_model(silent, sample_every=1)
    present = sum(o.admitted_t is not None for o in record.registrants)
    assert record.totals.queue_admitted > present
    assert record.totals.lapsed == record.totals.queue_admitted - present


def test_the_model_is_deterministic_for_a_seed(laptop: Scenario, laptop_run: RunRecord) -> None:
    again = run_model(laptop)
    assert again.totals == laptop_run.totals
    assert again.series == laptop_run.series
    other = run_model(laptop, seed=laptop.seed + 1)
    assert other.series.arrivals != laptop_run.series.arrivals


def test_run_records_round_trip_through_json(laptop_run: RunRecord, tmp_path: Path) -> None:
    path = laptop_run.save(tmp_path / "run.json")
    assert RunRecord.load(path) == laptop_run
    with pytest.raises(ValueError, match="not a Gelombang run record"):
        RunRecord.from_json(b'{"meta": {}}')


def test_sampling_keeps_memory_bounded_and_counts_exact(laptop: Scenario) -> None:
    full = run_model(laptop, sample_every=1)
    sampled = run_model(laptop, sample_every=10)
    assert sampled.totals == full.totals
    assert len(sampled.registrants) == pytest.approx(len(full.registrants) / 10, rel=0.05)
    assert all(o.index % 10 == 0 for o in sampled.registrants)
    post = [o for o in sampled.registrants if o.admitted_t is not None and not o.prequeue]
    assert (
        kendall_tau_b([o.joined_t or 0.0 for o in post], [o.admitted_t or 0.0 for o in post]) == 1.0
    )


def _plan_args(**overrides: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    plan.add_arguments(parser)
    args = parser.parse_args(["--scenario", "laptop", "--hours", "0.02", "--quiet"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_plan_finds_the_rate_that_clears_the_wave(capsys: pytest.CaptureFixture[str]) -> None:
    assert plan.run(_plan_args()) == 0
    out = capsys.readouterr().out
    assert "admit_rate/s" in out and "origin sessions" in out
    final = next(line for line in out.splitlines() if line.startswith("admit_rate "))
    assert "clears the wave in" in final
    rate = float(final.split()[1].removesuffix("/s")) + 0.05  # printed to 0.1/s
    scenario = load_scenario("laptop")
    cleared, _ = plan.clears_after(run_model(scenario, admit_rate=rate), rate, 60.0)
    assert cleared is not None and cleared <= 0.02 * 3600
    slower = rate / 2
    cleared_slow, _ = plan.clears_after(run_model(scenario, admit_rate=slower), slower, 60.0)
    assert cleared_slow is None or cleared_slow > 0.02 * 3600


def test_plan_refuses_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert plan.run(_plan_args(scenario="nope")) == 2
    assert "unknown scenario" in capsys.readouterr().err
    assert plan.run(_plan_args(hours=-1.0)) == 2
    assert plan.run(_plan_args(hours=10.0)) == 2
    assert "longer than the scenario" in capsys.readouterr().err
