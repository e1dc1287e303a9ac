"""The call-backs `gelombang demo` gives its run through Gelombang (issue 24): added to a
scenario without its own, a wave the service takes, and fast enough that people come back
inside a demo run (the demo itself: tests/e2e/test_sim_driver.py)."""

from __future__ import annotations

import dataclasses

from queue_service.notify_config import WEBHOOK_KINDS, parse_notify
from simulator.demo_callbacks import DEMO_CALLBACKS, with_demo_callbacks
from simulator.model import run_model
from simulator.scenario import load_scenario
from simulator.wave_definition import wave_definition
from tests.helpers.paths import TEST_SCENARIOS


def test_a_scenario_without_callbacks_gets_the_demos_and_the_service_takes_the_wave() -> None:
    laptop = load_scenario("laptop")
    assert not laptop.callbacks.enabled  # the bundled file stays as the model's tests read it
    demo = with_demo_callbacks(laptop)
    assert demo.callbacks == DEMO_CALLBACKS
    assert dataclasses.replace(demo, callbacks=laptop.callbacks) == laptop  # nothing else
    definition = wave_definition(
        demo, opens_at=0, closes_at=60, origin_url="http://127.0.0.1:1/",
        webhook_url="http://127.0.0.1:2/hook",
    )  # fmt: skip
    notify = parse_notify(definition["notify"])  # the service's own check
    # only what the driver's gateway receives: nobody is told by a channel nobody reads
    assert set(notify.channels) <= WEBHOOK_KINDS
    assert notify.webhook_url == "http://127.0.0.1:2/hook"


def test_a_scenario_with_its_own_callbacks_keeps_them() -> None:
    own = load_scenario(TEST_SCENARIOS / "callbacks.toml")
    assert with_demo_callbacks(own) is own


def test_in_a_demo_length_run_people_are_called_back_and_come_back_in_time() -> None:
    """The model of a 36 s run (the e2e demo's length): the compressed return delay brings
    most of those called back inside the run, so the demo's figures are returns, not zeros."""
    demo = with_demo_callbacks(load_scenario("laptop"))
    short = dataclasses.replace(demo, clock=dataclasses.replace(demo.clock, duration_s=36.0))
    record = run_model(short, population=700, sample_every=1)
    totals = record.totals.callbacks
    assert totals is not None
    assert totals["called_back"] > 50
    assert totals["came_back_in_time"] > 0.6 * totals["called_back"]
    assert totals["away_hours"] > 0
