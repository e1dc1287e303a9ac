"""The admin use cases: list and read waves, create or change one (with the autopilot's manual
override), pause, resume or close it, delete it. Every change is logged with who made it and
what changed. `http/admin.py` authenticates the operator, parses the request and renders what
these return; errors are the domain's (`errors.py`), answered once by `http/endpoint.py`."""

from __future__ import annotations

import logging
import time
from typing import Any

from queue_service import metrics
from queue_service.autopilot import AutopilotConfig
from queue_service.errors import Conflict
from queue_service.notify_config import check_channels
from queue_service.registry import WaveRegistry
from queue_service.store import Store
from queue_service.waves import WaveConfig, check_opening_change, iso_utc, parse_wave

log = logging.getLogger(__name__)

MANUAL_FIELDS = frozenset({"max_active", "admit_rate", "admit_burst"})
"""An operator who sets one of these on a wave with the autopilot on overrides it."""


class WaveAdmin:
    """What an operator does to waves; `actor` is who, for the log ("<name>@<address>")."""

    def __init__(self, store: Store, registry: WaveRegistry, channels: frozenset[str]) -> None:
        self.store = store
        self.registry = registry
        self.channels = channels
        """The call-back channels this deployment can send (a wave may ask for no other)."""

    async def view(self, wave: str) -> dict[str, Any]:
        """Configuration and live counts, read without writing anything (lua/read_counts.lua)."""
        runtime = await self.registry.get(wave)
        counts = await self.store.read_counts(wave)
        view: dict[str, Any] = {
            "wave": runtime.config.public_dict(),
            "state": counts.state,
            "counts": {
                "prequeue": counts.prequeue,
                "waiting": counts.waiting,
                "admitted": counts.admitted,
                "active": counts.active,
                "completed": counts.completed,
                "abandoned": counts.abandoned,
                "expired": counts.expired,
                "left": counts.left,
                "called": counts.called,
            },
        }
        if runtime.config.autopilot.enabled:
            state, decisions = await self.store.autopilot_view(wave)
            view["autopilot"] = autopilot_view(runtime.config.autopilot, state, decisions)
        return view

    async def views(self) -> list[dict[str, Any]]:
        return [await self.view(wave) for wave in await self.store.wave_ids()]

    async def put(self, wave: str, body: dict[str, Any], actor: str) -> tuple[bool, dict[str, Any]]:
        """Create the wave or change the fields `body` names; (created, the wave's view)."""
        existing = await self.store.get_wave(wave)
        current = existing[0] if existing else None
        config = parse_wave(wave, body, current)
        check_channels(config.notify, self.channels, wave)
        if current is not None and config.opens_at != current.opens_at:
            counts = await self.store.read_counts(wave)
            now = counts.now_ms / 1000  # Redis time, the clock the opening is judged by
            opened = counts.open_seq >= 0 or current.opens_at <= now
            check_opening_change(current, config, opened, now)
        result = await self.store.put_wave(config)
        overridden = manual_override(current, config, body)
        if overridden:
            # the operator's values apply at once; the autopilot holds off, then goes on from them
            hold_until = time.time() + config.autopilot.manual_hold_s
            await self.store.autopilot_manual(
                wave, int(hold_until * 1000), config.max_active, actor
            )
            log.info(
                "autopilot of %s holds off until %s: %s changed %s",
                wave, iso_utc(hold_until), actor, ", ".join(overridden),
                extra={"admin_action": "autopilot_hold", "wave": wave, "actor": actor},
            )  # fmt: skip
        await self.registry.reload(wave)
        self.registry.wake(wave)
        created = result == "created"
        _audit(actor, "create" if created else "update", wave, _diff(current, config))
        return created, await self.view(wave)

    async def delete(self, wave: str, actor: str, *, force: bool = False) -> None:
        """Remove a wave and all its data; refused while anyone waits or holds a session
        there, unless `force`."""
        view = await self.view(wave)
        counts = view["counts"]
        people = counts["active"]
        if view["state"] not in ("closed", "full"):  # in a closed wave nobody waits any more
            people += counts["waiting"] + counts["prequeue"]
        if people and not force:
            who = "1 person is" if people == 1 else f"{people:,} people are"
            raise Conflict(
                f"{who} waiting or registering in wave {wave}; close it first, or delete it "
                "anyway with ?force=true (gelombang wave delete --force).",
                code="wave_in_use",
            )
        removed = await self.store.delete_wave(wave)
        self.registry.forget(wave)
        _audit(actor, "delete", wave, {"keys_removed": removed, "people": people})

    async def control(self, wave: str, action: str, actor: str) -> dict[str, Any]:
        """Pause, resume or close the wave; the wave's view after."""
        result = await self.store.control(wave, action)
        if result == "closed":
            raise Conflict("The wave is closed; it cannot be resumed.", code="wave_closed")
        self.registry.wake(wave)
        _audit(actor, action, wave)
        return await self.view(wave)


def manual_override(
    current: WaveConfig | None, config: WaveConfig, body: dict[str, Any]
) -> list[str]:
    """The fields the autopilot decides that an operator changed on a wave it runs."""
    if current is None or not (current.autopilot.enabled and config.autopilot.enabled):
        return []
    return sorted(
        name
        for name in MANUAL_FIELDS & set(body)
        if getattr(current, name) != getattr(config, name)
    )


def autopilot_view(
    config: AutopilotConfig, state: dict[str, str], decisions: list[dict[str, str]]
) -> dict[str, Any]:
    """What the autopilot is doing and why: its target, the last signals and decisions."""

    def number(name: str) -> float | None:
        try:
            return float(state[name]) if state.get(name) else None
        except ValueError:
            return None

    hold_until = number("hold_until")
    decided_at = number("decided_at")
    target, recover_to = number("target"), number("recover_to")
    return {
        "mode": config.mode,
        "target_active": None if target is None else int(target),
        "admit_rate": number("rate"),
        "bounds": {"min_active": config.min_active, "max_active": config.max_active},
        "signals": {
            "latency_s": number("latency_s"),
            "latency_target_s": config.latency_target_s,
            "error_ratio": number("error_ratio"),
            "error_target": config.error_target,
            "active": int(number("active") or 0),
            "waiting": int(number("waiting") or 0),
            "session_s": number("session_s"),
            "stale": state.get("stale") == "1",
        },
        "last_decision": {
            "action": state.get("action"),
            "reason": state.get("reason"),
            "at": iso_utc(decided_at / 1000) if decided_at else None,
        },
        "hold_until": iso_utc(hold_until / 1000) if hold_until else None,
        "recover_to": (
            int(recover_to) if recover_to and target is not None and recover_to > target else None
        ),
        "decisions": int(number("decisions") or 0),
        "recent": decisions,
    }


def _audit(actor: str, action: str, wave: str, changes: dict[str, Any] | None = None) -> None:
    metrics.admin_actions.labels(action).inc()
    log.info(
        "admin %s %s by %s",
        action,
        wave,
        actor,
        extra={"admin_action": action, "wave": wave, "actor": actor, "changes": changes or {}},
    )


def _diff(before: WaveConfig | None, after: WaveConfig) -> dict[str, Any]:
    new = after.public_dict()
    if before is None:
        return new
    old = before.public_dict()
    return {k: {"from": old.get(k), "to": v} for k, v in new.items() if old.get(k) != v}
