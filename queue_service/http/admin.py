"""Admin API: bearer token compared in constant time; with no token configured the admin API is
disabled (403), never open. Every change is logged with who, from where, and what changed.
A refused token is logged with the address it came from, and an address that keeps guessing is
answered 429 (`FAILED_ADMIN_LOGINS`, per process) without its tokens being compared at all.
The handlers parse and answer; what they do is `admin.WaveAdmin`'s."""

from __future__ import annotations

import hmac
import logging
import time

from aiohttp import web

from queue_service import metrics
from queue_service.errors import Forbidden, RateLimited, Unauthorized
from queue_service.http.appkeys import ADMIN, ADMIN_FAILURES, SETTINGS
from queue_service.http.public import bearer_token, json_response, read_json_object
from queue_service.net import client_ip, rate_limit_key
from queue_service.ratelimit import Rule, limited_headers
from queue_service.waves import validate_wave_id

log = logging.getLogger(__name__)

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


async def list_waves(request: web.Request) -> web.Response:
    _authorize(request)
    return json_response({"waves": await request.app[ADMIN].views()})


async def get_wave(request: web.Request) -> web.Response:
    _authorize(request)
    return json_response(await request.app[ADMIN].view(_wave(request)))


async def put_wave(request: web.Request) -> web.Response:
    actor = _authorize(request)
    wave = _wave(request)
    body = await read_json_object(request)
    created, view = await request.app[ADMIN].put(wave, body, actor)
    return json_response(view, status=201 if created else 200)


async def delete_wave(request: web.Request) -> web.Response:
    """Remove a wave and all its data; refused while anyone waits or holds a session there,
    unless `?force=true`."""
    actor = _authorize(request)
    wave = _wave(request)
    await request.app[ADMIN].delete(wave, actor, force=request.query.get("force") == "true")
    return web.Response(status=204)


async def control_wave(request: web.Request) -> web.Response:
    actor = _authorize(request)
    wave = _wave(request)
    return json_response(
        await request.app[ADMIN].control(wave, request.match_info["action"], actor)
    )


def _wave(request: web.Request) -> str:
    return validate_wave_id(request.match_info["wave"])
