"""Call-backs in the scenario, the wave it defines, and the offline model (issue 24): people who
opt in leave the page, are told and called by the service's rules (lua/notify.lua,
lua/admit.lua), come back in time or not; the figures the report shows are the run's own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from queue_service.notify_config import parse_notify
from simulator.callback_params import CallbackParams
from simulator.callback_stats import away_s, callback_totals
from simulator.model import run_model
from simulator.records import RunRecord
from simulator.report import write_report
from simulator.scenario import Scenario, ScenarioError, load_scenario, scenario_from_dict
from simulator.stats import summarise
from simulator.summary import render_text
from simulator.wave_definition import as_toml, wave_definition
from tests.helpers.paths import TEST_SCENARIOS

SCENARIO = TEST_SCENARIOS / "callbacks.toml"


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(SCENARIO)


@pytest.fixture(scope="module")
def run(scenario: Scenario) -> RunRecord:
    return run_model(scenario, seed=7, sample_every=1)


def test_the_scenario_table_gives_the_wave_its_notify_object(scenario: Scenario) -> None:
    assert scenario.callbacks.optin_share == 0.4
    assert scenario.callbacks.offered == ("sms", "whatsapp")
    definition = wave_definition(
        scenario, opens_at=0, closes_at=60, origin_url="http://127.0.0.1:1/",
        webhook_url="http://127.0.0.1:2/hook",
    )  # fmt: skip
    notify = parse_notify(definition["notify"])  # the service's own check
    assert notify.channels == ("sms", "whatsapp")
    assert (notify.lead_s, notify.return_window_s) == (60.0, 120.0)
    assert notify.webhook_url == "http://127.0.0.1:2/hook"
    assert 'notify = {channels = ["sms", "whatsapp"]' in as_toml("w", definition)
    plain = wave_definition(
        load_scenario("laptop"), opens_at=0, closes_at=60, origin_url="http://127.0.0.1:1/"
    )
    assert "notify" not in plain


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"optin_share": 1.5}, "optin_share"),
        ({"optin_share": 0.2, "lead_s": 10.0}, "lead_s"),
        ({"optin_share": 0.2, "return_window_s": 60.0}, "return_window_s"),
        ({"optin_share": 0.2, "channels": {"pigeon": 1.0}}, "pigeon"),
        ({"optin_share": 0.2, "channels": {"sms": 0.0}}, "share > 0"),
        ({"optin": 0.2}, "unknown keys"),
    ],
)
def test_a_bad_callbacks_table_is_refused_saying_where(table: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario_from_dict({"name": "x", "population": {"size": 10}, "callbacks": table})


def test_the_channel_mix_is_drawn_in_its_shares() -> None:
    params = CallbackParams(optin_share=1.0, channels={"sms": 3, "email": 1})
    assert params.channel_mix == (("sms", 0.75), ("email", 1.0))


def test_the_totals_are_the_runs_own_outcomes(run: RunRecord) -> None:
    totals = run.totals.callbacks
    assert totals is not None
    counted = callback_totals(run.registrants, run.series)
    assert counted is not None
    for key, value in counted.items():
        assert totals[key] == value, key
    opted = [o for o in run.registrants if o.opted_in_t is not None]
    assert totals["opted_in"] == len(opted) > 200
    # bots never opt in; people opt in at a join (a first one, or one that came back)
    assert not any(o.is_bot for o in opted)
    assert all(o.joined_t is not None and o.opted_in_t >= o.joined_t for o in opted)
    # at most two messages each (near, turn), by the channel they chose
    assert sum(totals["messages"].values()) <= 2 * totals["called_back"]
    assert set(totals["messages"]) == {"sms", "whatsapp"}
    assert totals["came_back_in_time"] > 0.7 * totals["called_back"]


def test_an_away_holder_costs_no_slot_and_a_returning_one_is_admitted_first(
    run: RunRecord, scenario: Scenario
) -> None:
    assert max(run.series.active) <= scenario.wave.max_active
    assert sum(run.series.admissions) == run.totals.queue_admitted
    called = [o for o in run.registrants if o.called_t is not None]
    assert len(called) > 20
    for o in called:
        # called, not admitted: admission comes only after they are back
        assert o.admitted_t is None or (o.returned_t is not None and o.admitted_t >= o.returned_t)
        if o.returned_in_time and o.admitted_t is not None:
            assert o.admitted_t - o.returned_t < 5.0  # first in line: within a few tokens


def test_a_window_that_ends_with_nobody_back_skips_the_place(scenario: Scenario) -> None:
    """Everyone comes back 300 s after the first message, the window is 120 s: every called
    place is skipped as not returned, and their owners gave up as abandoned."""
    slow = dataclasses.replace(
        scenario,
        callbacks=dataclasses.replace(
            scenario.callbacks, return_median_s=300.0, return_sigma=0.0, never_return_share=0.0
        ),
        clock=dataclasses.replace(scenario.clock, duration_s=400.0),
    )
    record = run_model(slow, seed=7, sample_every=1)
    totals = record.totals.callbacks
    assert totals is not None
    called = [o for o in record.registrants if o.called_t is not None]
    assert totals["not_returned"] == len(called) > 50
    assert all(o.gave_up_reason == "abandoned" for o in called)
    assert totals["came_back_in_time"] == 0
    # each spared their time from opting in to the end of the window (or the run)
    assert totals["away_hours"] == callback_totals(record.registrants, record.series)["away_hours"]


def test_without_callbacks_nothing_changes(scenario: Scenario) -> None:
    off = dataclasses.replace(scenario, callbacks=CallbackParams())
    record = run_model(off, seed=7, sample_every=1)
    assert record.totals.callbacks is None
    assert not record.series.messages
    assert all(o.opted_in_t is None for o in record.registrants)


def test_the_summary_and_the_report_show_the_call_backs_from_the_runs_records(
    run: RunRecord, tmp_path: Path
) -> None:
    opted = [o for o in run.registrants if o.opted_in_t is not None]
    called = [o for o in opted if o.notified_t is not None]
    in_time = [o for o in opted if o.returned_in_time]
    spared_s = sum(away_s(o, run.meta.duration_s) for o in opted)
    summary = summarise(run)
    text = render_text([summary])
    lines = {line[:60].strip(): line[60:].strip() for line in text.splitlines()}
    assert lines["call-backs: opted in"] == f"{len(opted):,}"
    assert lines["called back"] == f"{len(called):,}"
    assert lines["came back in time"] == f"{len(in_time):,}"
    share = 100 * len(in_time) / len(called)
    assert lines["came back in time, of those called back"] == f"{share:.1f} %"
    assert lines["person-hours of polling spared"] == f"{spared_s / 3600:.1f}"
    page = write_report([run], tmp_path)
    html = next(p for p in page if p.suffix == ".html").read_text("utf-8")
    assert f'<td data-key="callbacks.called_back">{len(called):,}</td>' in html


def test_a_run_without_call_backs_shows_no_call_back_rows() -> None:
    record = run_model(load_scenario("laptop"), population=300, sample_every=1)
    assert "called back" not in render_text([summarise(record)])
