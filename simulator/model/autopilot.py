"""The autopilot in the offline model: the live loop (`queue_service/autopilot_loop.py`) on
virtual time, with the model's origin as its Prometheus.

Every `interval_s` (from the run's first tick, as the live loop decides from the moment the
wave is loaded) it reads the origin's health over the queries' window
(`CapacityOrigin.health`), the wave's load as `autopilot_loop.load_of` reads it (active slots,
waiting + pre-queue tickets, the measured slot hold or the wave's session estimate), calls
`queue_service.autopilot.decide` (the law itself, imported) and, in mode `on`, applies what
`lua/autopilot.lua` applies: the target as `max_active`, the rate as `admit_rate`, and the
burst following the rate (`max(1, rate)`) unless the wave configured one. Mode `advise`
records the decision and applies nothing. Every decision is kept (`decisions`, then the run
record's `autopilot`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from queue_service.autopilot import (
    AutopilotConfig,
    ControllerState,
    Load,
    Signals,
    decide,
    start_target,
)
from simulator.model.queue import Limits
from simulator.records import AutopilotStep

if TYPE_CHECKING:
    from simulator.model.runner import WaveModel


class AutopilotController:
    """A `Controller`: the autopilot's decisions, once per interval."""

    def __init__(self, config: AutopilotConfig, configured_max_active: int,
                 configured_burst: float = 0.0) -> None:  # fmt: skip
        if not config.enabled:
            raise ValueError("the autopilot is off")
        self.config = config
        self.configured_burst = configured_burst
        self.state = ControllerState(target=start_target(config, configured_max_active))
        self.next_at = 0.0
        self.decisions: list[AutopilotStep] = []

    def limits_at(self, t: float, model: WaveModel) -> Limits | None:
        if t < self.next_at:
            return None
        self.next_at = t + self.config.interval_s
        health = model.origin.health(model.people.inflow)
        signals = Signals(latency_s=health.latency_s, error_ratio=health.error_ratio)
        queue = model.queue
        load = Load(
            active=queue.active,
            waiting=queue.waiting + len(queue.prequeue_block),
            session_s=model.pace.hold_s or model.scenario.wave.session_estimate_s,
            planned_session_s=model.scenario.wave.session_estimate_s,
        )
        decision = decide(self.config, self.state, signals, load, t)
        self.state = decision.state
        applies = self.config.mode == "on"
        self.decisions.append(
            AutopilotStep(
                t=t,
                action=decision.action,
                target=decision.target,
                admit_rate=decision.admit_rate,
                latency_s=signals.latency_s,
                error_ratio=signals.error_ratio,
                active=load.active,
                waiting=load.waiting,
                session_s=load.session_s,
                applied=applies,
            )
        )
        if not applies:
            return None
        current = queue.limits
        burst = self.configured_burst or max(1.0, decision.admit_rate)
        limits = Limits(decision.admit_rate, burst, decision.target, current.quota)
        unchanged = current.max_active == limits.max_active and math.isclose(
            current.admit_rate, limits.admit_rate, rel_tol=1e-5
        )
        return None if unchanged else limits
