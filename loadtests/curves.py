"""The wave-opening curve a load shape follows: a scenario's arrival intensity λ(t) over the
opening, normalised to a peak of 1. No Locust import, so it is testable anywhere."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.arrivals import ArrivalProcess
from simulator.scenario import Scenario


@dataclass(frozen=True)
class OpeningWindow:
    """The part of a scenario's clock a rehearsal replays: from the start of the build-up to
    when the spike has decayed to a few percent (six spike time constants)."""

    start_s: float
    end_s: float

    @classmethod
    def of(cls, scenario: Scenario) -> OpeningWindow:
        opens = scenario.clock.opens_at_s
        start = max(0.0, opens - scenario.arrivals.pre_window_s)
        end = min(scenario.clock.closes_at_s, opens + 6.0 * scenario.arrivals.tau_spike_s)
        return cls(start, max(end, start + 1.0))


def user_curve(process: ArrivalProcess, window: OpeningWindow, points: int) -> list[float]:
    """λ over the window at `points` evenly spaced instants, normalised to a peak of 1."""
    step = (window.end_s - window.start_s) / points
    rates = [process.rate(window.start_s + (i + 0.5) * step) for i in range(points)]
    peak = max(rates) or 1.0
    return [r / peak for r in rates]
