"""Carry-over in the model and the planner (issue 24): when a wave closes, its holders still
waiting who opted in are carried to the next opening, placed as the service places them
(first at its draw, or into its pre-queue), and that many fewer people rush in at its start;
every number the planner prints is counted again from the model runs it came from."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from queue_service.notify_config import CONTACT_KINDS
from simulator import next_opening
from simulator.commands import plan
from simulator.model.callbacks import NOT_OPTED, OVER, Carried
from simulator.model.carry import Openings
from simulator.model.queue import CALLED, IN_LINE
from simulator.model.runner import run_wave_model
from simulator.scenario import Scenario, ScenarioError, load_scenario, scenario_from_dict
from tests.helpers.paths import TEST_SCENARIOS
from tests.unit.test_sim_message_load import messages_of

SCENARIO = TEST_SCENARIOS / "callbacks_carry.toml"


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(SCENARIO)


def ordered(scenario: Scenario, order: str) -> Scenario:
    return dataclasses.replace(
        scenario, callbacks=dataclasses.replace(scenario.callbacks, carry_over_order=order)
    )


def test_carry_over_needs_verified_joins() -> None:
    with pytest.raises(ScenarioError, match="verified_joins"):
        scenario_from_dict(
            {
                "name": "x",
                "population": {"size": 10},
                "callbacks": {"optin_share": 0.5, "carry_over_to": "next"},
            }
        )


def test_the_holders_still_waiting_who_opted_in_are_carried_called_first(
    scenario: Scenario,
) -> None:
    model = run_wave_model(scenario, seed=7, sample_every=1)
    callbacks, tickets = model.people.callbacks, model.queue.tickets
    carried = model.carry_out()
    waiting = [
        t for t, state in enumerate(callbacks.state)
        if state not in (NOT_OPTED, OVER) and tickets.state[t] in (IN_LINE, CALLED)
    ]  # fmt: skip
    assert len(carried) == len(waiting) > 100
    # each with their own channel and their own decision to come back (or not)
    kinds = [CONTACT_KINDS[callbacks.channel[t]] for t in waiting]
    assert sorted(c.channel for c in carried) == sorted(kinds)
    never = sum(callbacks.back_after[t] < 0 for t in waiting)
    assert sum(c.back_after_s is None for c in carried) == never
    # one message each ("your place moved"), on top of what the people were sent
    record = model.result_with_seed()
    sent = sum(sum(counts) for counts in record.series.messages.values())
    assert sent == sum(messages_of(record).values()) + len(carried)


@pytest.mark.parametrize("order", ["ahead", "prequeue"])
def test_the_carried_are_placed_as_the_service_places_them(scenario: Scenario, order: str) -> None:
    carried = [Carried("sms", 3.0)] * 50
    model = run_wave_model(ordered(scenario, order), seed=8, carried=carried, sample_every=1)
    tickets, population = model.queue.tickets, model.population
    mine = [t for t in range(len(tickets)) if tickets.owner[t] >= population]
    positions = sorted(tickets.position[t] for t in mine)
    assert len(mine) == 50
    if order == "ahead":  # first at the draw, in their order
        assert [tickets.position[t] for t in mine] == list(range(50))
    else:  # drawn with the pre-queue: spread through it
        prequeue = sum(tickets.prequeue)
        assert positions[-1] < prequeue and positions != list(range(50))
    totals = model.result_with_seed().totals.callbacks
    assert totals is not None and totals["carried_in"] == 50
    # away: called when reached (no slot), back 3 s after the message, admitted first
    assert totals["came_back_in_time"] >= 45
    assert model.arriving == population - 50


def test_plan_prints_what_carry_over_does_to_the_next_opening(
    scenario: Scenario,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Openings] = []
    counted = next_opening.next_opening

    def keep(openings: Openings, s: Scenario) -> next_opening.NextOpening:
        seen.append(openings)
        return counted(openings, s)

    monkeypatch.setattr(next_opening, "next_opening", keep)
    parser = argparse.ArgumentParser()
    plan.add_arguments(parser)
    assert (
        plan.run(parser.parse_args(["--scenario", str(SCENARIO), "--hours", "0.012", "--quiet"]))
        == 0
    )
    out = capsys.readouterr().out
    (openings,) = seen
    # counted again from the runs: first attempts from the pre-queue's start to 10.25 s after
    # the opening (a quarter of the 41 s the wave is open), and the busiest second
    start, end = (
        scenario.clock.opens_at_s - scenario.wave.prequeue_s,
        scenario.clock.opens_at_s + 10.25,
    )

    def first_attempts(record) -> list[int]:  # type: ignore[no-untyped-def]
        series = record.series
        return [n for k, n in enumerate(series.arrivals) if start <= k * series.step_s < end]

    without, with_carry = first_attempts(openings.next_without), first_attempts(openings.next_with)
    assert sum(with_carry) < sum(without)
    assert f"carried        {len(openings.carried):,} holders" in out
    assert f"{sum(without):,} first attempts without carry-over, {sum(with_carry):,} with" in out
    assert f"{max(without):,.1f} first attempts/s without, {max(with_carry):,.1f} with" in out
    # the messages are the first opening's, with one to each holder carried
    carried_line = re.search(r"one to each of the ([\d,]+) carried", out)
    assert carried_line is not None and int(carried_line[1].replace(",", "")) == len(
        openings.carried
    )
    total = int(re.findall(r"^  all +([\d,]+)", out, re.MULTILINE)[0].replace(",", ""))
    assert total == sum(messages_of(openings.first).values()) + len(openings.carried)
