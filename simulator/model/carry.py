"""Two consecutive openings with carry-over (`notify.carry_over_to`, docs/callbacks.md): the
first wave runs; when it closes or fills, its holders still waiting who opted in are carried
(`CallbackModel.carry_out`); the next opening of the same crowd runs twice, with them placed as
the service places them (`carry_over_order`: first at its draw, or into its pre-queue) and that
many fewer people arriving, and without carry-over, for comparison.

    run_openings(scenario, *, seed=None, admit_rate=None, max_active=None, quota=None,
                 population=None) -> Openings
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.model.callbacks import Carried
from simulator.model.runner import run_model, run_wave_model
from simulator.records import RunRecord
from simulator.scenario import Scenario


@dataclass(frozen=True)
class Openings:
    first: RunRecord
    carried: list[Carried]
    next_with: RunRecord
    """The next opening, the carried placed and not arriving again."""
    next_without: RunRecord
    """The same next opening had nobody been carried."""


def run_openings(
    scenario: Scenario,
    *,
    seed: int | None = None,
    admit_rate: float | None = None,
    max_active: int | None = None,
    quota: int | None = None,
    population: int | None = None,
) -> Openings:
    seed = scenario.seed if seed is None else seed
    first = run_wave_model(
        scenario,
        seed=seed,
        population=population,
        admit_rate=admit_rate,
        max_active=max_active,
        quota=quota,
    )
    carried = first.carry_out()
    record = first.result_with_seed()

    def next_opening(carried: list[Carried]) -> RunRecord:
        # another day, other draws, the same crowd
        return run_model(
            scenario,
            seed=seed + 1,
            population=population,
            admit_rate=admit_rate,
            max_active=max_active,
            quota=quota,
            carried=carried,
        )

    return Openings(record, carried, next_opening(carried), next_opening([]))
