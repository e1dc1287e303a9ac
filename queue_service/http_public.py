"""Public HTTP handlers: thin, they parse and answer; the service decides."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from queue_service.appkeys import KEYRING, SERVICE, SETTINGS, STORE
from queue_service.errors import ApiError, BadRequest, StoreUnavailable, Unauthorized
from queue_service.net import client_ip
from queue_service.service import MAX_REGISTRANT_LENGTH
from queue_service.waves import validate_wave_id

TICKET_COOKIE = "gelombang_ticket"
TICKET_HEADER = "X-Queue-Ticket"
TICKET_COOKIE_MAX_AGE_S = 7 * 24 * 3600
NO_STORE = {"Cache-Control": "no-store"}


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


async def read_json_object(request: web.Request) -> dict[str, Any]:
    content = request.content
    if request.content_length is not None and content.is_eof():
        # The whole body came with the headers (a join's always does): take it as it is,
        # without read()'s loop of coroutines. Its size was checked against the limit from
        # Content-Length before the handler ran. Other bodies go through read(), which
        # enforces the limit as it reads.
        raw = content.read_nowait()
    else:
        raw = await request.read()
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


def _ticket(request: web.Request) -> str:
    ticket = (
        request.headers.get(TICKET_HEADER)
        or request.query.get("ticket")
        or request.cookies.get(TICKET_COOKIE)
    )
    if not ticket:
        raise Unauthorized(
            "No ticket: join the wave first (cookie, X-Queue-Ticket header or ?ticket=).",
            code="missing_ticket",
        )
    return ticket


def _registrant(body: dict[str, Any]) -> str:
    registrant = body.get("registrant")
    if not isinstance(registrant, str) or not 1 <= len(registrant) <= MAX_REGISTRANT_LENGTH:
        raise BadRequest(
            f"registrant must be a string of 1-{MAX_REGISTRANT_LENGTH} characters.",
            code="invalid_registrant",
        )
    if not registrant.isprintable():
        raise BadRequest(
            "registrant must not contain control characters.", code="invalid_registrant"
        )
    return registrant


async def join(request: web.Request) -> web.Response:
    wave = _wave(request)
    registrant = _registrant(await read_json_object(request))
    result = await request.app[SERVICE].join(wave, registrant, _ip(request))
    body = {**result.view, "ticket": result.ticket}
    headers = {**NO_STORE, "Set-Cookie": _ticket_cookie(wave, result.ticket, request.secure)}
    return json_response(body, status=201 if result.created else 200, headers=headers)


def _ticket_cookie(wave: str, ticket: str, secure: bool) -> str:
    """The Set-Cookie value `response.set_cookie(...)` would write, built directly: the
    http.cookies machinery was ~5% of a join's CPU in the profile. Safe without quoting:
    tickets are digits, '.' and url-safe base64, wave ids are [a-z0-9_-]."""
    cookie = (
        f"{TICKET_COOKIE}={ticket}; HttpOnly; Max-Age={TICKET_COOKIE_MAX_AGE_S}; "
        f"Path=/api/v1/waves/{wave}; SameSite=Lax"
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
    response.del_cookie(TICKET_COOKIE, path=f"/api/v1/waves/{wave}")
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


async def waiting_page(request: web.Request) -> web.Response:
    wave = _wave(request)
    await request.app[SERVICE].registry.get(wave)  # unknown wave: 404
    html = _static_text("waiting.html").replace("__WAVE_ID_JSON__", orjson.dumps(wave).decode())
    response = web.Response(
        text=html,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        },
    )
    response.enable_compression()  # 22 KB -> 8 KB: it matters on 2G
    return response


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=_static_text("openapi.json"), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except (ApiError, StoreUnavailable) as exc:
        raise StoreUnavailable(
            "Redis is not reachable.", retry_after_s=exc.retry_after_s or 2
        ) from None
    return json_response({"status": "ready"})
