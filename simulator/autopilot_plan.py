"""`gelombang plan --autopilot`: what to set so the autopilot runs the wave, and what it will do.

    plan = plan_autopilot(scenario)    # two model runs with the autopilot on
    print(render(plan))

The first run uses the scenario's `[wave.autopilot]` (or, without one, the defaults between
`min_active` 10 and the wave's `max_active`) and learns the target the autopilot settles at
in every capacity phase of the origin (`autopilot_sweep.capacity_phases`). The bounds to set
follow from those targets: `max_active` = 1.5 x the highest (room to grow if the origin is
better than modelled, and where the autopilot starts: a start far above the origin's capacity
costs an overload at the opening), `min_active` = half the lowest (never cut below half of
what the weakest phase can take). The second run uses those bounds, the wave starting at the
new `max_active`, and every figure printed comes from it: per phase, when the autopilot
settles (its first decision from which the origin's error share stays within the error target
to the phase's end), the mean target and admission rate from then on, the goodput (completed
registrations/s) and the origin's error share after settling. When the latency target's
healthy line (0.8 x `latency_target_s`) lies at or below what an idle origin's p95 reads from
its histogram buckets, it says so: the autopilot could never grow (`latency_target_warning`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from queue_service.autopilot import HEALTHY_LATENCY, AutopilotConfig
from simulator.autopilot_sweep import (
    Phase,
    Run,
    autopilot_run,
    capacity_phases,
    converged_at,
    origin_error_share,
)
from simulator.model.capacity_origin import capacity_origin
from simulator.scenario import OFFLINE_PROMETHEUS, Scenario

HEADROOM = 1.5
"""max_active = this x the highest settled target."""
FLOOR_SHARE = 0.5
"""min_active = this x the lowest settled target."""
DEFAULT_MIN_ACTIVE = 10


@dataclass(frozen=True)
class PhasePlan:
    phase: Phase
    settles_after_s: float | None
    """After the phase starts; None: the origin's errors never stay within the target."""
    target: float
    """Mean target from settling to the phase's end (the whole phase if it never settles)."""
    admit_rate: float
    goodput: float
    errors_after: float
    """The origin's error share from settling to the phase's end."""


@dataclass(frozen=True)
class AutopilotPlan:
    scenario: Scenario
    config: AutopilotConfig
    """The autopilot to set (the bounds planned)."""
    phases: list[PhasePlan]
    run: Run
    idle_latency_s: float = math.nan
    """What the latency query reads for the origin at no load (its histogram's buckets)."""


def autopilot_of(scenario: Scenario) -> AutopilotConfig:
    """The scenario's autopilot, on; or the defaults between 10 and the wave's max_active."""
    if scenario.autopilot.enabled:
        return dataclasses.replace(scenario.autopilot, mode="on")
    high = scenario.wave.max_active
    if high < 1:
        raise ValueError("the wave needs a max_active (the autopilot's upper bound) to start")
    return AutopilotConfig(
        mode="on",
        prometheus_url=OFFLINE_PROMETHEUS,
        min_active=min(DEFAULT_MIN_ACTIVE, high),
        max_active=high,
    )


def with_autopilot(scenario: Scenario, config: AutopilotConfig) -> Scenario:
    """The scenario with this autopilot, the wave starting at its upper bound."""
    wave = dataclasses.replace(scenario.wave, max_active=config.max_active)
    return dataclasses.replace(scenario, wave=wave, autopilot=config)


def phase_plans(run: Run, scenario: Scenario, error_target: float) -> list[PhasePlan]:
    plans = []
    for phase, figures in zip(capacity_phases(scenario), run.phases, strict=True):
        at = converged_at(run, phase, error_target)
        start = phase.start_s if at is None else at
        later = [d for d in run.record.autopilot if start <= d.t < phase.end_s]
        plans.append(
            PhasePlan(
                phase=phase,
                settles_after_s=None if at is None else at - phase.start_s,
                target=sum(d.target for d in later) / len(later) if later else math.nan,
                admit_rate=sum(d.admit_rate for d in later) / len(later) if later else math.nan,
                goodput=figures.goodput,
                errors_after=origin_error_share(run, start, phase.end_s),
            )
        )
    return plans


def planned_bounds(config: AutopilotConfig, targets: list[float]) -> AutopilotConfig:
    settled = [t for t in targets if not math.isnan(t)]
    if not settled:
        return config
    high = max(1, math.ceil(HEADROOM * max(settled)))
    low = max(1, min(high, math.floor(FLOOR_SHARE * min(settled))))
    return dataclasses.replace(config, min_active=low, max_active=high)


def plan_autopilot(scenario: Scenario, seed: int | None = None) -> AutopilotPlan:
    first_config = autopilot_of(scenario)
    first = with_autopilot(scenario, first_config)
    learnt = phase_plans(autopilot_run(first, seed), first, first_config.error_target)
    config = planned_bounds(first_config, [p.target for p in learnt])
    planned = with_autopilot(scenario, config)
    run = autopilot_run(planned, seed)
    idle = capacity_origin(planned).idle_latency_s()
    return AutopilotPlan(planned, config, phase_plans(run, planned, config.error_target), run, idle)


def latency_target_warning(config: AutopilotConfig, idle_latency_s: float) -> str | None:
    """A latency target the origin can never be healthy under: its healthy line (0.8 x) at or
    below what the latency query reads for the origin at no load."""
    line = HEALTHY_LATENCY * config.latency_target_s
    if math.isnan(idle_latency_s) or idle_latency_s < line:
        return None
    return (
        f"Warning: latency_target_s {config.latency_target_s:g} s: the autopilot grows only "
        f"below {line:.2f} s, and an idle origin's p95 already reads {idle_latency_s:.2f} s "
        "from its histogram buckets: it could never grow. Set a target of at least "
        f"{idle_latency_s / HEALTHY_LATENCY:.2f} s (better: 0.8 x it above that bucket's "
        "upper bound)."
    )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def render(plan: AutopilotPlan) -> str:
    config, scenario = plan.config, plan.scenario
    header = ("phase", "origin workers", "settles in", "target", "admit_rate/s", "goodput/s",
              "origin errors")  # fmt: skip
    rows = [header]
    for p in plan.phases:
        rows.append(
            (
                f"{p.phase.start_s:g}-{p.phase.end_s:g} s",
                f"{p.phase.capacity}",
                _seconds(p.settles_after_s),
                f"{p.target:.1f}",
                f"{p.admit_rate:.2f}",
                f"{p.goodput:.2f}",
                f"{p.errors_after:.2%}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    table = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    table.insert(1, "  ".join("-" * w for w in widths))
    settings = {
        "mode": "on",
        "prometheus_url": "http://prometheus:9090",
        "latency_target_s": config.latency_target_s,
        "error_target": config.error_target,
        "min_active": config.min_active,
        "max_active": config.max_active,
        "interval_s": config.interval_s,
    }
    return "\n".join(
        [
            f"With the autopilot on (model run, scenario {scenario.name!r}; 'settles in': from "
            "the phase's start until the origin's errors stay within "
            f"{config.error_target:.0%}; target, admit_rate and errors: from then on):",
            *table,
            "",
            f"Bounds to set: min_active {config.min_active}, max_active {config.max_active} "
            f"(the wave starts at max_active).",
            f"  gelombang wave put {scenario.wave.id} --set max_active={config.max_active} "
            f"--set 'autopilot={json.dumps(settings)}'",
            "  (prometheus_url: the Prometheus that scrapes your origin)",
            *filter(None, [latency_target_warning(config, plan.idle_latency_s)]),
        ]
    )
