"""Admin API: bearer token compared in constant time; with no token configured the admin API is
disabled (403), never open. Every change is logged with who, from where, and what changed."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web

from queue_service import metrics
from queue_service.appkeys import SERVICE, SETTINGS, STORE
from queue_service.errors import Conflict, Forbidden, Unauthorized
from queue_service.http_public import bearer_token, json_response, read_json_object
from queue_service.net import client_ip
from queue_service.registry import unknown_wave
from queue_service.store import UnknownWave
from queue_service.waves import WaveConfig, check_opening_change, parse_wave, validate_wave_id

log = logging.getLogger(__name__)

ACTIONS = ("pause", "resume", "close")


def _authorize(request: web.Request) -> str:
    """The actor for the audit log ("<operator name>@<address>"), or raise. Every configured
    token is compared, in constant time, so timing tells nothing about which one matched."""
    settings = request.app[SETTINGS]
    tokens = settings.admin_tokens_by_name
    if not tokens:
        raise Forbidden(
            "The admin API is disabled: no admin token is configured.", code="admin_disabled"
        )
    token = bearer_token(request) or ""
    presented = token.encode() if token.isascii() else b""  # our tokens are ASCII
    actor = None
    for name, token in tokens.items():
        if hmac.compare_digest(presented, token.encode()) and presented:
            actor = name
    if actor is None:
        raise Unauthorized("A valid admin bearer token is required.", code="invalid_admin_token")
    return f"{actor}@{client_ip(request, settings.trusted_networks)}"


async def _view(request: web.Request, wave: str) -> dict[str, Any]:
    """Configuration and live counts, read without writing anything (lua/read_counts.lua)."""
    service = request.app[SERVICE]
    runtime = await service.registry.get(wave)
    try:
        counts = await request.app[STORE].read_counts(wave)
    except UnknownWave:
        service.registry.forget(wave)
        raise unknown_wave(wave) from None
    return {
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
        },
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
    if current is not None and config.opens_at != current.opens_at:
        counts = await store.read_counts(wave)
        now = counts.now_ms / 1000  # Redis time, the clock the opening is judged by
        opened = counts.open_seq >= 0 or current.opens_at <= now
        check_opening_change(current, config, opened, now)
    result = await store.put_wave(config)
    await request.app[SERVICE].registry.reload(wave)
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
    _audit(actor, action, wave)
    return json_response(await _view(request, wave))
