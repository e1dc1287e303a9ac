"""The offline model's runs: what their record says, deterministic for a seed, sampled, and the
seams a controller and an origin model plug into. The admission guarantees the model's queue
keeps (FIFO, the shuffled pre-queue, the token bucket, max_active, quota, abandonment) are
tested with one body on the model and on Redis (tests/guarantees/)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from simulator.commands import plan
from simulator.model import Limits, WaveModel, run_model
from simulator.model.origin import SampleOrigin
from simulator.records import RunRecord
from simulator.scenario import Scenario, load_scenario
from simulator.stats import kendall_tau_b


@pytest.fixture(scope="module")
def laptop() -> Scenario:
    return load_scenario("laptop")


@pytest.fixture(scope="module")
def laptop_run(laptop: Scenario) -> RunRecord:
    return run_model(laptop)


def test_the_record_counts_each_admission_once_inside_the_wave(
    laptop: Scenario, laptop_run: RunRecord
) -> None:
    """The admission guarantees themselves are tested on the model's queue and on Redis with
    one body each (tests/guarantees/); this is the record a whole run writes of them."""
    assert sum(laptop_run.series.admissions) == laptop_run.totals.queue_admitted
    assert max(laptop_run.series.active) <= laptop.wave.max_active
    opens, closes = laptop_run.meta.opens_at_s, 100.0
    admitted = [o for o in laptop_run.registrants if o.admitted_t is not None]
    assert len(admitted) > 300
    for o in admitted:
        assert o.joined_t is not None and o.joined_t <= o.admitted_t
        assert opens <= o.admitted_t < closes


def test_ghost_admissions_are_counted_as_lapsed(laptop: Scenario) -> None:
    """People who go silently keep their ticket until their deadline: admission reaches some
    of them, and each such admission lapses unclaimed; people who say so are never admitted."""
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
    leaving = dataclasses.replace(
        impatient, behaviour=dataclasses.replace(impatient.behaviour, silent_abandon_share=0.0)
    )
    record = run_model(leaving, sample_every=1)
    present = sum(o.admitted_t is not None for o in record.registrants)
    assert record.totals.gave_up["reneged"] > 1000
    assert record.totals.admitted == present == record.totals.queue_admitted
    silent = dataclasses.replace(
        impatient, behaviour=dataclasses.replace(impatient.behaviour, silent_abandon_share=1.0)
    )
    record = run_model(silent, sample_every=1)
    present = sum(o.admitted_t is not None for o in record.registrants)
    assert record.totals.queue_admitted > present
    assert record.totals.lapsed == record.totals.queue_admitted - present


class HalveSlotsAt:
    """A controller: at `at` s, max_active halves (as an operator's PUT would)."""

    def __init__(self, at: float) -> None:
        self.at, self.changed_at = at, None

    def limits_at(self, t: float, model: WaveModel) -> Limits | None:
        if t < self.at or self.changed_at is not None:
            return None
        self.changed_at = t
        current = model.queue.limits
        return dataclasses.replace(current, max_active=current.max_active // 2)


def test_a_controller_changes_the_limits_between_events(laptop: Scenario) -> None:
    """The seam an autopilot runs in: new limits from one tick on, the rest of the run
    held to them (sessions already running end as they would)."""
    controller = HalveSlotsAt(40.0)
    record = run_model(laptop, controller=controller)
    assert controller.changed_at == 40.0
    cap = laptop.wave.max_active
    assert max(record.series.active[:40]) == cap
    settled = int(40 + laptop.wave.session_ttl_s) + 1
    assert max(record.series.active[settled:]) <= cap // 2
    assert record.totals.queue_admitted < run_model(laptop).totals.queue_admitted


def test_the_origin_is_a_seam_the_model_reads_through(laptop: Scenario) -> None:
    origin = SampleOrigin(laptop.origin)
    assert origin.requests_in_flight(10) == round(10 * origin.inflight_share)
    health = origin.health(sessions_in_flow=5)
    assert health.error_ratio == 0.0 and health.latency_s > 0
    assert laptop.origin.capacity == origin.capacity


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
