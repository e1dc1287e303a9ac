"""Public HTTP handlers: thin, they parse and answer; the service decides."""

from __future__ import annotations

import asyncio
import functools
import re
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from queue_service.appkeys import KEYRING, OVERLOAD, SERVICE, SETTINGS, STORE
from queue_service.errors import (
    ApiError,
    BadRequest,
    RequestTimeout,
    StoreUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from queue_service.net import client_ip, forwarded_https
from queue_service.overload import SHED_RETRY_AFTER_S
from queue_service.waiting_page import etag, language
from queue_service.waiting_page import render as render_page
from queue_service.waves import validate_wave_id

TICKET_COOKIE = "gelombang_ticket"
TICKET_HEADER = "X-Queue-Ticket"
TICKET_COOKIE_MAX_AGE_S = 7 * 24 * 3600
NO_STORE = {"Cache-Control": "no-store"}
JSON_TYPES = frozenset({"application/json"})


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 415 unless it is declared JSON, 408 if it trickles in."""
    if request.content_type not in JSON_TYPES:
        raise UnsupportedMediaType(
            "Send the body as JSON, with Content-Type: application/json.",
            code="unsupported_media_type",
        )
    content = request.content
    if request.content_length is not None and content.is_eof():
        # The whole body came with the headers (a join's always does): take it as it is,
        # without read()'s loop of coroutines. Its size was checked against the limit from
        # Content-Length before the handler ran. Other bodies go through read(), which
        # enforces the limit as it reads.
        raw = content.read_nowait()
    else:
        limit_s = request.app[SETTINGS].body_timeout_s
        try:
            async with asyncio.timeout(limit_s):
                raw = await request.read()
        except TimeoutError:
            raise RequestTimeout(
                f"The request body did not arrive within {limit_s:g} s.", code="request_timeout"
            ) from None
    if not raw:
        raise BadRequest("The request needs a JSON object body.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def _wave(request: web.Request) -> str:
    wave = request.match_info["wave"]
    if wave in request.app[SERVICE].registry.loaded:
        return wave  # a loaded wave's id was checked when it was loaded
    return validate_wave_id(wave)


def _ip(request: web.Request) -> str:
    return client_ip(request, request.app[SETTINGS].trusted_networks)


def presented_ticket(request: web.Request) -> str | None:
    return (
        request.headers.get(TICKET_HEADER)
        or request.query.get("ticket")
        or request.cookies.get(TICKET_COOKIE)
    )


def _ticket(request: web.Request) -> str:
    ticket = presented_ticket(request)
    if not ticket:
        raise Unauthorized(
            "No ticket: join the wave first (cookie, X-Queue-Ticket header or ?ticket=).",
            code="missing_ticket",
        )
    return ticket


async def join(request: web.Request) -> web.Response:
    wave = _wave(request)
    body = await read_json_object(request)
    result = await request.app[SERVICE].join(wave, body, _ip(request), presented_ticket(request))
    response = json_response(
        {**result.view, "ticket": result.ticket},
        status=201 if result.created else 200,
        headers=NO_STORE,
    )
    secure = _secure(request)
    # one for the API, one for the waiting page (its server-side render reads it)
    for path in (f"/api/v1/waves/{wave}", f"/w/{wave}"):
        response.headers.add("Set-Cookie", _ticket_cookie(path, result.ticket, secure))
    return response


def _secure(request: web.Request) -> bool:
    """Came over TLS: directly, or to a trusted proxy that says so (X-Forwarded-Proto)."""
    return request.secure or forwarded_https(request, request.app[SETTINGS].trusted_networks)


def _ticket_cookie(path: str, ticket: str, secure: bool) -> str:
    """The Set-Cookie value `response.set_cookie(...)` would write, built directly: the
    http.cookies machinery was ~5% of a join's CPU in the profile. Safe without quoting:
    tickets are digits, '.' and url-safe base64, wave ids are [a-z0-9_-]."""
    cookie = (
        f"{TICKET_COOKIE}={ticket}; HttpOnly; Max-Age={TICKET_COOKIE_MAX_AGE_S}; "
        f"Path={path}; SameSite=Lax"
    )
    return cookie + "; Secure" if secure else cookie


async def status(request: web.Request) -> web.Response:
    wave = _wave(request)
    view = await request.app[SERVICE].status(wave, _ticket(request), _ip(request))
    return json_response(view, headers=NO_STORE)


async def leave(request: web.Request) -> web.Response:
    wave = _wave(request)
    await request.app[SERVICE].leave(wave, _ticket(request))
    response = web.Response(status=204)
    for path in (f"/api/v1/waves/{wave}", f"/w/{wave}"):
        response.del_cookie(TICKET_COOKIE, path=path)
    return response


def bearer_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


async def complete(request: web.Request) -> web.Response:
    wave = _wave(request)
    token = bearer_token(request)
    if not token:
        raise Unauthorized(
            "Send the admission token as Authorization: Bearer <token>.", code="missing_token"
        )
    await request.app[SERVICE].complete(wave, token)
    return web.Response(status=204)


FEED_POSITION = re.compile(r"[0-9]{1,15}-[0-9]{1,15}")  # fullmatch: a stream entry id


async def revoked(request: web.Request) -> web.Response:
    """Admission tokens revoked (sessions ended), the feed origin guards read to refuse a
    completed session's token (origin_guard.py). Resume with `?after=<next_after>` (exact:
    nothing is missed or repeated); `?after_ms=<ms>` starts from that millisecond on."""
    after = request.query.get("after")
    if after is not None:
        if not FEED_POSITION.fullmatch(after):
            raise BadRequest(
                "after must be a feed position as given in next_after (<ms>-<n>).",
                code="invalid_query",
            )
        position = after
    else:
        after_ms = request.query.get("after_ms", "0")
        if not (after_ms.isascii() and after_ms.isdigit() and len(after_ms) <= 15):
            raise BadRequest(
                "after_ms must be a whole number of milliseconds.", code="invalid_query"
            )
        position = str(int(after_ms))
    body = await request.app[SERVICE].revoked(_wave(request), position)
    return json_response(body, headers={"Cache-Control": "no-cache"})


async def challenge(request: web.Request) -> web.Response:
    body = await request.app[SERVICE].challenge(_wave(request))
    return json_response(body, headers=NO_STORE)


async def wave_info(request: web.Request) -> web.Response:
    info = await request.app[SERVICE].info(_wave(request))
    return json_response(info, headers={"Cache-Control": "public, max-age=1"})


async def jwks(request: web.Request) -> web.Response:
    return json_response(
        request.app[KEYRING].jwks(), headers={"Cache-Control": "public, max-age=300"}
    )


@functools.cache
def _static_text(name: str) -> str:
    return (resources.files("queue_service") / "static" / name).read_text(encoding="utf-8")


PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Vary": "Accept-Language, Cookie",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src 'self' data:; worker-src blob:; "
    "frame-ancestors 'none'",
}


async def waiting_page(request: web.Request) -> web.Response:
    """The page, rendered with the state of the ticket in its cookie (waiting_page.py);
    unchanged since the last visit: 304."""
    wave = _wave(request)
    service = request.app[SERVICE]
    info = await service.info(wave)  # unknown wave: 404
    view = None
    ticket = request.cookies.get(TICKET_COOKIE)
    if ticket:
        try:
            view = await service.status(wave, ticket, _ip(request))  # counts as a poll
        except ApiError:
            view = None  # the script will join or wait as it does without the server's answer
    body = render_page(wave, info, view, language(request.headers.get("Accept-Language", "")))
    headers = {**PAGE_HEADERS, "ETag": etag(body)}
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    response = web.Response(text=body, content_type="text/html", charset="utf-8", headers=headers)
    response.enable_compression()  # 22 KB -> 8 KB: it matters on 2G
    return response


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=_static_text("openapi.json"), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: Redis answers and the process is not saturated (a load balancer steers new
    connections elsewhere before this process has to shed; overload.py)."""
    guard = request.app[OVERLOAD]
    if guard.saturated:
        return json_response(
            {"status": "saturated", **guard.readiness()},
            status=503,
            headers={"Retry-After": str(SHED_RETRY_AFTER_S)},
        )
    try:
        await request.app[STORE].ping()
    except (ApiError, StoreUnavailable) as exc:
        raise StoreUnavailable(
            "Redis is not reachable.", retry_after_s=exc.retry_after_s or 2
        ) from None
    return json_response({"status": "ready", **guard.readiness()})
