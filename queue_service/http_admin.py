"""Admin API: bearer token compared in constant time; with no token configured the admin API is
disabled (403), never open. Every change is logged with who, from where, and what changed.
A refused token is logged with the address it came from, and an address that keeps guessing is
answered 429 (`FAILED_ADMIN_LOGINS`, per process) without its tokens being compared at all."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from aiohttp import web

from queue_service import metrics
from queue_service.appkeys import ADMIN_FAILURES, CALLBACKS, SERVICE, SETTINGS, STORE
from queue_service.autopilot import AutopilotConfig
from queue_service.errors import Conflict, Forbidden, RateLimited, Unauthorized
from queue_service.http_public import bearer_token, json_response, read_json_object
from queue_service.net import client_ip, rate_limit_key
from queue_service.notify_config import check_channels
from queue_service.ratelimit import Rule, limited_headers
from queue_service.registry import unknown_wave
from queue_service.store import UnknownWave
from queue_service.waves import (
    WaveConfig,
    check_opening_change,
    iso_utc,
    parse_wave,
    validate_wave_id,
)

log = logging.getLogger(__name__)

ACTIONS = ("pause", "resume", "close")
MANUAL_FIELDS = frozenset({"max_active", "admit_rate", "admit_burst"})
"""An operator who sets one of these on a wave with the autopilot on overrides it."""
FAILED_ADMIN_LOGINS = Rule(rate_per_s=0.2, burst=10)
"""Refused admin tokens allowed per client address: ten, then one every five seconds."""


def _authorize(request: web.Request) -> str:
    """The actor for the audit log ("<operator name>@<address>"), or raise. Every configured
    token is compared, in constant time, so timing tells nothing about which one matched."""
    settings = request.app[SETTINGS]
    tokens = settings.admin_tokens_by_name
    if not tokens:
        raise Forbidden(
            "The admin API is disabled: no admin token is configured.", code="admin_disabled"
        )
    address = client_ip(request, settings.trusted_networks)
    guesses, now = request.app[ADMIN_FAILURES], time.monotonic()
    retry_s = guesses.retry_after(rate_limit_key(address), now)
    if retry_s:
        headers = limited_headers("admin_token", FAILED_ADMIN_LOGINS, int(retry_s * 1000))
        raise RateLimited(
            "Too many refused admin tokens from this address; wait before trying again.",
            retry_after_s=float(headers["Retry-After"]),
            headers=headers,
        )
    token = bearer_token(request) or ""
    presented = token.encode() if token.isascii() else b""  # our tokens are ASCII
    actor = None
    for name, token in tokens.items():
        if hmac.compare_digest(presented, token.encode()) and presented:
            actor = name
    if actor is None:
        guesses.charge(rate_limit_key(address), now)
        metrics.admin_refused.inc()
        log.warning(
            "admin token refused for %s %s from %s", request.method, request.path, address,
            extra={"admin_action": "refused", "actor": f"?@{address}"},
        )  # fmt: skip
        raise Unauthorized("A valid admin bearer token is required.", code="invalid_admin_token")
    return f"{actor}@{address}"


async def _view(request: web.Request, wave: str) -> dict[str, Any]:
    """Configuration and live counts, read without writing anything (lua/read_counts.lua)."""
    service = request.app[SERVICE]
    runtime = await service.registry.get(wave)
    try:
        counts = await request.app[STORE].read_counts(wave)
    except UnknownWave:
        service.registry.forget(wave)
        raise unknown_wave(wave) from None
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
        state, decisions = await request.app[STORE].autopilot_view(wave)
        view["autopilot"] = autopilot_view(runtime.config.autopilot, state, decisions)
    return view


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
    return {
        "mode": config.mode,
        "target_active": int(state["target"]) if state.get("target") else None,
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


async def list_waves(request: web.Request) -> web.Response:
    _authorize(request)
    views = [await _view(request, wave) for wave in await request.app[STORE].wave_ids()]
    return json_response({"waves": views})


async def get_wave(request: web.Request) -> web.Response:
    _authorize(request)
    return json_response(await _view(request, validate_wave_id(request.match_info["wave"])))


async def put_wave(request: web.Request) -> web.Response:
    actor = _authorize(request)
    wave = validate_wave_id(request.match_info["wave"])
    body = await read_json_object(request)
    store = request.app[STORE]
    existing = await store.get_wave(wave)
    current = existing[0] if existing else None
    config = parse_wave(wave, body, current)
    check_channels(config.notify, request.app[CALLBACKS].channels, wave)
    if current is not None and config.opens_at != current.opens_at:
        counts = await store.read_counts(wave)
        now = counts.now_ms / 1000  # Redis time, the clock the opening is judged by
        opened = counts.open_seq >= 0 or current.opens_at <= now
        check_opening_change(current, config, opened, now)
    result = await store.put_wave(config)
    overridden = manual_override(current, config, body)
    if overridden:
        # the operator's values apply at once; the autopilot holds off, then goes on from them
        hold_until = time.time() + config.autopilot.manual_hold_s
        await store.autopilot_manual(wave, int(hold_until * 1000), config.max_active, actor)
        log.info(
            "autopilot of %s holds off until %s: %s changed %s",
            wave, iso_utc(hold_until), actor, ", ".join(overridden),
            extra={"admin_action": "autopilot_hold", "wave": wave, "actor": actor},
        )  # fmt: skip
    registry = request.app[SERVICE].registry
    await registry.reload(wave)
    registry.wake(wave)
    _audit(actor, "create" if result == "created" else "update", wave, _diff(current, config))
    return json_response(await _view(request, wave), status=201 if result == "created" else 200)


async def delete_wave(request: web.Request) -> web.Response:
    """Remove a wave and all its data; refused while anyone waits or holds a session there,
    unless `?force=true`."""
    actor = _authorize(request)
    wave = validate_wave_id(request.match_info["wave"])
    view = await _view(request, wave)
    counts = view["counts"]
    people = counts["active"]
    if view["state"] not in ("closed", "full"):  # in a closed wave nobody waits any more
        people += counts["waiting"] + counts["prequeue"]
    if people and request.query.get("force") != "true":
        who = "1 person is" if people == 1 else f"{people:,} people are"
        raise Conflict(
            f"{who} waiting or registering in wave {wave}; close it first, or delete it "
            "anyway with ?force=true (gelombang wave delete --force).",
            code="wave_in_use",
        )
    removed = await request.app[STORE].delete_wave(wave)
    request.app[SERVICE].registry.forget(wave)
    _audit(actor, "delete", wave, {"keys_removed": removed, "people": people})
    return web.Response(status=204)


async def control_wave(request: web.Request) -> web.Response:
    actor = _authorize(request)
    wave = validate_wave_id(request.match_info["wave"])
    action = request.match_info["action"]
    try:
        result = await request.app[STORE].control(wave, action)
    except UnknownWave:
        raise unknown_wave(wave) from None
    if result == "closed":
        raise Conflict("The wave is closed; it cannot be resumed.", code="wave_closed")
    request.app[SERVICE].registry.wake(wave)
    _audit(actor, action, wave)
    return json_response(await _view(request, wave))
