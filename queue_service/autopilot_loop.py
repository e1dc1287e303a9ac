"""The autopilot's loop, in every process: for each wave whose autopilot is on (or advising),
once per `interval_s`, exactly one process in the whole deployment makes the decision.

    claim (lua/autopilot.lua)  -- the first process to ask in an interval of Redis time wins
    read the signals           -- autopilot_signals.py, the operator's Prometheus
    decide                     -- autopilot.py, the control law (no I/O)
    apply (lua/autopilot.lua)  -- only the interval's claimant; 'on' writes max_active and
                                  admit_rate into the wave (every process reloads it), 'advise'
                                  records the recommendation only; both are logged and audited

Every process also refreshes its autopilot gauges from the wave's state at each try, so every
replica's /metrics says the same. A process that dies after claiming costs that one interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import time
from typing import Any

from queue_service import metrics
from queue_service.autopilot import (
    AutopilotConfig,
    ControllerState,
    Decision,
    Load,
    Signals,
    decide,
    start_target,
)
from queue_service.autopilot_signals import PrometheusReader
from queue_service.errors import ApiError, UnknownWave
from queue_service.registry import WaveRegistry, WaveRuntime
from queue_service.store import Store

log = logging.getLogger(__name__)

TRY_EVERY_S = 1.0
"""How often a process asks whether an interval's decision is due (at most; a quarter of the
interval for short intervals), so the decision comes within this long of the interval's start."""


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def controller_state(
    state: dict[str, str], config: AutopilotConfig, max_active: int
) -> ControllerState:
    """The law's memory, as the wave's autopilot hash keeps it."""
    target = int(state["target"]) if state.get("target") else start_target(config, max_active)
    return ControllerState(
        target=target,
        last_decrease_at=_number(state.get("last_decrease_at"), -math.inf),
        last_increase_at=_number(state.get("last_increase_at"), -math.inf),
        breached=state.get("breached") == "1",
        hold_until=_number(state.get("hold_until"), -math.inf * 1000) / 1000,
        recover_to=int(_number(state.get("recover_to"), 0)),
    )


def state_fields(state: ControllerState) -> dict[str, str]:
    """The law's memory as the wave's autopilot hash keeps it (`controller_state` reads it)."""
    return {
        "last_decrease_at": _time(state.last_decrease_at),
        "last_increase_at": _time(state.last_increase_at),
        "breached": "1" if state.breached else "0",
        "recover_to": str(state.recover_to),
    }


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def _optional(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _time(at: float) -> str:
    return "" if at == -math.inf else f"{at:.3f}"


class AutopilotLoop:
    def __init__(
        self,
        store: Store,
        registry: WaveRegistry,
        *,
        reader: PrometheusReader | None = None,
        owner: str | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._reader = reader or PrometheusReader()
        self.owner = owner or process_name()
        self._next_try: dict[str, float] = {}

    async def run(self) -> None:
        try:
            while True:
                await self.tick()
                await asyncio.sleep(0.25)
        finally:
            await self._reader.close()

    async def tick(self) -> None:
        now = time.monotonic()
        due = [
            runtime
            for wave, runtime in list(self._registry.loaded.items())
            if runtime.config.autopilot.enabled and self._next_try.get(wave, 0.0) <= now
        ]
        for runtime in due:
            config = runtime.config.autopilot
            self._next_try[runtime.config.id] = now + min(TRY_EVERY_S, config.interval_s / 4)
        await asyncio.gather(*(self._consider(runtime) for runtime in due))

    async def _consider(self, runtime: WaveRuntime) -> None:
        wave, config = runtime.config.id, runtime.config.autopilot
        try:
            claim = await self._store.autopilot_claim(wave, self.owner, config.interval_s)
            refresh_gauges(wave, config, claim.state)
            if not claim.claimed:
                return
            signals = await self._reader.signals(config, wave)
            decision = decide(
                config,
                controller_state(claim.state, config, runtime.config.max_active),
                signals,
                load_of(runtime),
                time.time(),
            )
            await self._apply(runtime, claim.interval, decision, signals)
        except UnknownWave:
            return
        except ApiError as exc:
            log.warning("autopilot of wave %s skipped an interval: %s", wave, exc.message)

    async def _apply(
        self, runtime: WaveRuntime, interval: int, decision: Decision, signals: Signals
    ) -> None:
        wave, config = runtime.config.id, runtime.config.autopilot
        load = load_of(runtime)
        state = decision.state
        record = {
            "action": decision.action,
            "reason": decision.reason,
            "latency_s": _optional(signals.latency_s),
            "error_ratio": _optional(signals.error_ratio),
            "active": str(load.active),
            "waiting": str(load.waiting),
            "session_s": f"{load.session_s:.6g}",
            **state_fields(state),
            "stale": "1" if decision.action == "stale" else "0",
            "actor": f"autopilot@{self.owner}",
        }
        if signals.readable:
            record["signal_at"] = f"{time.time():.3f}"
        applied = await self._store.autopilot_apply(
            wave,
            self.owner,
            interval,
            apply=config.mode == "on",
            target=decision.target,
            admit_rate=decision.admit_rate,
            record=record,
        )
        if applied.status == "lost":
            return
        metrics.autopilot_decisions.labels(wave, decision.action).inc()
        changed = applied.status == "applied" and (
            applied.previous_max_active != decision.target
            or not math.isclose(applied.previous_admit_rate, decision.admit_rate, rel_tol=1e-5)
        )
        if changed:
            await self._registry.reload(wave)  # this process applies it at once
            self._registry.wake(wave)
        _audit(wave, config, decision, applied.previous_max_active,
               applied.previous_admit_rate, self.owner, changed)  # fmt: skip


def load_of(runtime: WaveRuntime) -> Load:
    counts = runtime.counts
    planned_s = runtime.config.session_estimate_s
    session_s = runtime.pace.hold_s or planned_s
    if counts is None:
        return Load(active=0, waiting=0, session_s=session_s, planned_session_s=planned_s)
    return Load(counts.active, counts.waiting + counts.prequeue, session_s, planned_s)


def refresh_gauges(wave: str, config: AutopilotConfig, state: dict[str, str]) -> None:
    """The autopilot's state on this process's /metrics (from Redis: the same everywhere)."""
    series = metrics.autopilot_series(wave)
    if state.get("target"):
        target = int(state["target"])
        series.target.set(target)
        series.at_floor.set(1 if target <= config.min_active else 0)
    if state.get("rate"):
        series.admit_rate.set(float(state["rate"]))
    series.latency.set(_number(state.get("latency_s"), math.nan))
    series.errors.set(_number(state.get("error_ratio"), math.nan))
    series.stale.set(1 if state.get("stale") == "1" else 0)
    series.mode.set({"off": 0, "advise": 1, "on": 2}[config.mode])


def _audit(
    wave: str,
    config: AutopilotConfig,
    decision: Decision,
    previous_max_active: int,
    previous_rate: float,
    owner: str,
    changed: bool,
) -> None:
    """Every decision is logged like an operator's change, naming the autopilot as the actor."""
    changes: dict[str, Any] = {}
    if changed:
        changes = {
            "max_active": {"from": previous_max_active, "to": decision.target},
            "admit_rate": {"from": previous_rate, "to": round(decision.admit_rate, 6)},
        }
    level = logging.INFO if changed or decision.action == "stale" else logging.DEBUG
    log.log(
        level,
        "autopilot %s %s (%s): target %d, admit_rate %.3g/s: %s",
        decision.action,
        wave,
        config.mode,
        decision.target,
        decision.admit_rate,
        decision.reason,
        extra={
            "admin_action": f"autopilot_{decision.action}",
            "wave": wave,
            "actor": f"autopilot@{owner}",
            "changes": changes,
        },
    )
