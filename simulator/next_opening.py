"""What carry-over does to the next opening (`gelombang plan` for a scenario whose call-backs
carry over, `simulator.model.carry`): how many holders are carried, and how many fewer people
rush in at its start, from the two model runs of that opening (with and without them).

- `next_opening(openings, scenario) -> NextOpening`;
- `render(figures, scenario) -> str`: the planner's lines.

"The start" is from the pre-queue's start to `window_s` after the opening: ten minutes, or a
quarter of the wave's open time when that is shorter (a compressed test wave).
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.model.carry import Openings
from simulator.records import RunRecord
from simulator.scenario import Scenario

WINDOW_S = 600.0


@dataclass(frozen=True)
class NextOpening:
    carried: int
    window_s: float
    first_attempts_without: int
    first_attempts_with: int
    busiest_bin_s: float
    busiest_per_s_without: float
    busiest_per_s_with: float


def window_s(scenario: Scenario) -> float:
    clock = scenario.clock
    return min(WINDOW_S, (min(clock.closes_at_s, clock.duration_s) - clock.opens_at_s) / 4)


def _start(record: RunRecord, scenario: Scenario, window: float) -> list[int]:
    """First attempts per bin from the pre-queue's start to `window` after the opening."""
    series = record.series
    start = max(0.0, scenario.clock.opens_at_s - scenario.wave.prequeue_s)
    first, last = series.bin(start), series.bin(scenario.clock.opens_at_s + window - 1e-9)
    return series.arrivals[first : last + 1]


def next_opening(openings: Openings, scenario: Scenario) -> NextOpening:
    window = window_s(scenario)
    without = _start(openings.next_without, scenario, window)
    with_carry = _start(openings.next_with, scenario, window)
    step = openings.next_with.series.step_s
    return NextOpening(
        carried=len(openings.carried),
        window_s=window,
        first_attempts_without=sum(without),
        first_attempts_with=sum(with_carry),
        busiest_bin_s=step,
        busiest_per_s_without=max(without, default=0) / step,
        busiest_per_s_with=max(with_carry, default=0) / step,
    )


def _change(before: float, after: float) -> str:
    return f"{after / before - 1:+.0%}" if before else "–"


def render(figures: NextOpening, scenario: Scenario) -> str:
    callbacks = scenario.callbacks
    where = (
        "first at its draw, in their order here"
        if callbacks.carry_over_order == "ahead"
        else "into its pre-queue, drawn with everyone"
    )
    f = figures
    return "\n".join(
        [
            f"Carry-over to {callbacks.carry_over_to!r} (model of the next opening, with and "
            "without it):",
            f"  carried        {f.carried:,} holders still waiting who opted in, placed {where}, "
            "each told by their channel",
            f"  its start      {f.first_attempts_without:,} first attempts without carry-over, "
            f"{f.first_attempts_with:,} with "
            f"({_change(f.first_attempts_without, f.first_attempts_with)}), from the pre-queue "
            f"to {f.window_s:g} s after the opening",
            f"  busiest {f.busiest_bin_s:g} s   {f.busiest_per_s_without:,.1f} first attempts/s "
            f"without, {f.busiest_per_s_with:,.1f} with "
            f"({_change(f.busiest_per_s_without, f.busiest_per_s_with)})",
        ]
    )
