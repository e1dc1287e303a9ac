"""What the autopilot is measured against: the best fixed setting of each capacity phase.

    phases = capacity_phases(scenario)          # the wave cut where the origin's capacity steps
    sweep = fixed_sweep(scenario)               # the model with fixed settings, autopilot off
    best = sweep.best(i, error_limit=0.02)      # the best of phase i by goodput
    run = autopilot_run(scenario)               # the model with the scenario's autopilot
    run.phases[i].goodput / best.phases[i].goodput >= 0.8

A fixed setting is a `max_active` and the `admit_rate` that keeps it busy (Little's law over the
scenario's mean session at no load, as the autopilot pairs them); each is one model run over the
whole wave (the origin follows its schedule), and each phase is judged on its own window: the
best fixed setting of a phase is an oracle that knew that phase's capacity in advance. Goodput
is completed registrations per second; the error share is the origin's 5xx share of its
requests in the window. `best(..., error_limit=)` only considers settings that kept the origin
within the autopilot's error target in that phase (the autopilot is asked to, so the setting it
is compared with must too; without a limit the best may be one that fails many people).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from simulator import sessions
from simulator.model.capacity_origin import CapacityOrigin, capacity_origin
from simulator.model.runner import run_model
from simulator.records import RunRecord
from simulator.scenario import Scenario

SETTINGS = 16
"""Fixed settings tried (geometric between the autopilot's bounds)."""


@dataclass(frozen=True)
class Phase:
    start_s: float
    end_s: float
    capacity: int

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class PhaseFigures:
    phase: Phase
    goodput: float
    """Completed registrations per second in the phase."""
    error_share: float
    """The origin's failed share of its requests in the phase."""
    completed: int


@dataclass(frozen=True)
class Run:
    """A model run judged phase by phase."""

    max_active: int
    admit_rate: float
    phases: list[PhaseFigures]
    record: RunRecord
    origin: CapacityOrigin


@dataclass(frozen=True)
class Sweep:
    runs: list[Run]

    def best(self, phase: int, error_limit: float | None = None) -> Run:
        allowed = [
            r
            for r in self.runs
            if error_limit is None or r.phases[phase].error_share <= error_limit
        ]
        if not allowed:
            raise ValueError(f"no fixed setting kept phase {phase} within the error limit")
        return max(allowed, key=lambda r: r.phases[phase].goodput)


def capacity_phases(scenario: Scenario) -> list[Phase]:
    """The open wave cut at every capacity step of the origin's schedule."""
    opens, closes = scenario.clock.opens_at_s, scenario.clock.closes_at_s
    closes = min(closes, scenario.clock.duration_s)
    cuts = sorted({at for at, _ in scenario.origin.capacity_schedule if opens < at < closes})
    edges = [opens, *cuts, closes]
    return [Phase(a, b, scenario.origin.capacity_at(a)) for a, b in itertools.pairwise(edges)]


def phase_figures(record: RunRecord, origin: CapacityOrigin, phase: Phase) -> PhaseFigures:
    series = record.series
    first, last = series.bin(phase.start_s), series.bin(phase.end_s - 1e-9)
    completed = sum(series.completions[first : last + 1])
    window = (last + 1 - first) * series.step_s
    inside = [(n, e) for t, n, e in origin.history if phase.start_s < t <= phase.end_s]
    requests = sum(n for n, _ in inside)
    errors = sum(e for _, e in inside)
    return PhaseFigures(
        phase=phase,
        goodput=completed / window,
        error_share=errors / requests if requests > 0 else 0.0,
        completed=completed,
    )


def _judged(scenario: Scenario, record: RunRecord, origin: CapacityOrigin) -> list[PhaseFigures]:
    return [phase_figures(record, origin, p) for p in capacity_phases(scenario)]


def fixed_run(scenario: Scenario, max_active: int, seed: int | None = None) -> Run:
    """The wave with admission fixed at `max_active` and its Little's-law rate."""
    rate = max_active / sessions.mean_session_s(scenario.origin)
    origin = capacity_origin(scenario)
    record = run_model(
        scenario, seed=seed, max_active=max_active, admit_rate=rate, autopilot=False, origin=origin
    )
    return Run(max_active, rate, _judged(scenario, record, origin), record, origin)


def configured_run(scenario: Scenario, seed: int | None = None) -> Run:
    """The wave at the operator's own settings (`[wave]`), the autopilot off."""
    origin = capacity_origin(scenario)
    record = run_model(scenario, seed=seed, autopilot=False, origin=origin)
    wave = scenario.wave
    return Run(wave.max_active, wave.admit_rate, _judged(scenario, record, origin), record, origin)


def autopilot_run(scenario: Scenario, seed: int | None = None) -> Run:
    """The wave with its `[wave.autopilot]` on (decisions in `record.autopilot`)."""
    if not scenario.autopilot.enabled:
        raise ValueError(f"scenario {scenario.name!r} has no autopilot on")
    origin = capacity_origin(scenario)
    record = run_model(scenario, seed=seed, origin=origin)
    wave = scenario.wave
    return Run(wave.max_active, wave.admit_rate, _judged(scenario, record, origin), record, origin)


def default_settings(scenario: Scenario, count: int = SETTINGS) -> list[int]:
    """`count` max_active values, geometric between the autopilot's bounds (or 1 and the
    wave's max_active)."""
    config = scenario.autopilot
    low = config.min_active if config.enabled else 1
    high = config.max_active if config.enabled else scenario.wave.max_active
    high = max(high, low + 1)
    ratio = (high / low) ** (1 / max(1, count - 1))
    return sorted({max(1, round(low * ratio**k)) for k in range(count)})


def fixed_sweep(
    scenario: Scenario, settings: Sequence[int] | None = None, seed: int | None = None
) -> Sweep:
    chosen = list(settings) if settings is not None else default_settings(scenario)
    return Sweep([fixed_run(scenario, m, seed) for m in chosen])


def origin_error_share(run: Run, start_s: float, end_s: float) -> float:
    """The origin's failed share of its requests in (start_s, end_s]."""
    inside = [(n, e) for t, n, e in run.origin.history if start_s < t <= end_s]
    requests = sum(n for n, _ in inside)
    return sum(e for _, e in inside) / requests if requests > 0 else 0.0


def converged_at(run: Run, phase: Phase, error_limit: float) -> float | None:
    """The first decision of the autopilot in `phase` from which the origin's error share
    stays within `error_limit` until the phase ends (None: no such decision)."""
    for decision in run.record.autopilot:
        inside = phase.start_s <= decision.t < phase.end_s
        if inside and origin_error_share(run, decision.t, phase.end_s) <= error_limit:
            return decision.t
    return None


def target_after(run: Run, start_s: float, end_s: float) -> float:
    """The autopilot's mean target over decisions in [start_s, end_s)."""
    targets = [d.target for d in run.record.autopilot if start_s <= d.t < end_s]
    return sum(targets) / len(targets) if targets else math.nan
