"""The planner's call-back lines (`gelombang plan`, a scenario with call-backs): the messages
by channel of the full-size run at the chosen rate (`simulator.message_load`) and, when the
wave carries its holders over to the next one, what that does to the next opening
(`simulator.model.carry`, `simulator.next_opening`)."""

from __future__ import annotations

from simulator import message_load, next_opening
from simulator.model.carry import Openings, run_openings
from simulator.records import RunRecord
from simulator.scenario import Scenario


def callback_plan(
    scenario: Scenario, record: RunRecord, admit_rate: float, max_active: int, seed: int | None
) -> str:
    """`record`: the full-size run at `admit_rate` (the first opening, with carry-over: run
    again as the first of two, so its messages include the carried holders' own)."""
    openings: Openings | None = None
    if scenario.callbacks.carry_over_to:
        openings = run_openings(scenario, seed=seed, admit_rate=admit_rate, max_active=max_active)
        record = openings.first
    text = message_load.render(message_load.message_load(record), record)
    if openings is not None:
        figures = next_opening.next_opening(openings, scenario)
        text += "\n\n" + next_opening.render(figures, scenario)
    return text
