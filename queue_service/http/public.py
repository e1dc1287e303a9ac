"""Public HTTP handlers: thin, they parse and answer; the service decides."""

from __future__ import annotations

import asyncio
import functools
import math
import re
import secrets
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from aiohttp import web

from queue_service.errors import (
    ApiError,
    BadRequest,
    NotFound,
    RateLimited,
    RequestTimeout,
    StoreUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from queue_service.http.appkeys import KEYRING, OVERLOAD, SERVICE, SETTINGS, STORE
from queue_service.http.waiting_page import (
    BUSY_CODES,
    PAGE_SECURITY_HEADERS,
    SHED_PAGE_HEADERS,
    JoinForm,
    etag,
    language,
    not_found_page_bytes,
    shed_page_bytes,
)
from queue_service.http.waiting_page import render as render_page
from queue_service.net import client_ip, forwarded_https
from queue_service.notify_config import CONTACT_KINDS
from queue_service.overload import SHED_RETRY_AFTER_S
from queue_service.views import TicketView
from queue_service.waves import validate_wave_id

TICKET_COOKIE = "gelombang_ticket"
TICKET_HEADER = "X-Queue-Ticket"
TICKET_COOKIE_MAX_AGE_S = 7 * 24 * 3600
NO_STORE = {"Cache-Control": "no-store"}
JSON_TYPES = frozenset({"application/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_REGISTRANT_CHARS = 128
HOLDING_STATES = frozenset({"prequeue", "waiting", "closing", "paused", "admitted"})
"""A ticket in one of these holds a place: a form join with it goes straight back to the page."""


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
    raw = await _read_body(request)
    if not raw:
        raise BadRequest("The request needs a JSON object body.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    return body


async def _read_body(request: web.Request) -> bytes:
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
    return raw


async def read_form(request: web.Request) -> dict[str, str]:
    """A browser's form post (application/x-www-form-urlencoded) as name -> first value; 415
    for anything else, 400 if it is not UTF-8."""
    if request.content_type != FORM_TYPE:
        raise UnsupportedMediaType(f"Send the form as {FORM_TYPE}.", code="unsupported_media_type")
    raw = await _read_body(request)
    try:
        fields = parse_qs(raw.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("The form is not valid UTF-8 form data.", code="invalid_form") from None
    return {name: values[0] for name, values in fields.items()}


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
    answer: dict[str, Any] = {**result.view, "ticket": result.ticket}
    if result.callback is not None:
        answer["callback"] = result.callback  # call-backs: what was kept, or why not
    response = json_response(
        answer,
        status=201 if result.created else 200,
        headers=NO_STORE,
    )
    _set_ticket_cookies(request, response, wave, result.ticket)
    if result.created and result.callback is None:
        _forget_callback(request, response, wave)  # a new place: nobody will call it yet
    return response


def _forget_callback(request: web.Request, response: web.StreamResponse, wave: str) -> None:
    if "gelombang_callback" not in request.cookies:
        return
    for path in (f"/api/v1/waves/{wave}", f"/w/{wave}"):
        response.del_cookie("gelombang_callback", path=path)


def _set_ticket_cookies(
    request: web.Request, response: web.StreamResponse, wave: str, ticket: str
) -> None:
    """One for the API, one for the waiting page (its server-side render reads it)."""
    secure = _secure(request)
    for path in (f"/api/v1/waves/{wave}", f"/w/{wave}"):
        response.headers.add("Set-Cookie", _ticket_cookie(path, ticket, secure))


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
    _forget_callback(request, response, wave)
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
    **PAGE_SECURITY_HEADERS,
}
REFUSAL_CODE = re.compile(r"[a-z_]{1,40}")  # fullmatch: an error code, nothing else


def _small_page(status: int, body: bytes, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, body=body, headers=headers)


def page_unavailable(exc: StoreUnavailable | None = None) -> web.Response:
    """The waiting page's stand-in while it cannot be served (shedding, Redis away): 503, the
    place is safe, it reloads itself after Retry-After (waiting_page.shed_page_bytes)."""
    headers = dict(SHED_PAGE_HEADERS)
    if exc is not None and exc.retry_after_s:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return _small_page(503, shed_page_bytes(), headers)


def page_not_found() -> web.Response:
    headers = {"Content-Type": "text/html; charset=utf-8", **PAGE_SECURITY_HEADERS}
    return _small_page(404, not_found_page_bytes(), headers)


async def _page_ticket_view(
    request: web.Request, wave: str, ticket: str | None
) -> TicketView | None:
    """The state of the page's ticket; None when there is none or it holds no place. Redis
    away or a rate limit raise: the holder may have a place, so the page must not offer to
    join as if they had none."""
    if not ticket:
        return None
    try:
        return await request.app[SERVICE].status(wave, ticket, _ip(request))  # counts as a poll
    except (StoreUnavailable, RateLimited):
        raise
    except ApiError:
        return None  # no valid ticket: the page offers to join, as it does without one


async def waiting_page(request: web.Request) -> web.Response:
    """The page, rendered with the state of the ticket in `?ticket=` or its cookie
    (waiting_page.py); unchanged since the last visit: 304. It stays a page when things go
    wrong: an unknown wave gets a page that says so, Redis away the page that says the place
    is safe and reloads itself, a holder reloading faster than their ticket's rate limit the
    page without their state ("busy, your place is kept"), never a button to join again."""
    service = request.app[SERVICE]
    linked = request.query.get("ticket")
    busy_s = None
    try:
        wave = _wave(request)
        info = await service.info(wave)
        config = (await service.registry.get(wave)).config
        try:
            view = await _page_ticket_view(
                request, wave, linked or request.cookies.get(TICKET_COOKIE)
            )
        except RateLimited as exc:
            view, busy_s = None, exc.retry_after_s or float(SHED_RETRY_AFTER_S)
    except (NotFound, BadRequest):
        return page_not_found()
    except StoreUnavailable as exc:
        return page_unavailable(exc)
    registrant = request.query.get("registrant", "")
    if not 0 < len(registrant) <= MAX_REGISTRANT_CHARS:
        registrant = secrets.token_hex(16)  # one id per page: a double tap joins once
    form = JoinForm(registrant, request.query.get("enqueue_token", ""))
    refused = request.query.get("refused")
    body = render_page(
        wave,
        info,
        view,
        language(request.headers.get("Accept-Language", "")),
        config=config,
        form=form,
        refused=refused if refused and REFUSAL_CODE.fullmatch(refused) else None,
        busy_s=busy_s,
        now=service.clock.now(),
        callback_kind=_callback_kind(request, view),
    )
    headers = {**PAGE_HEADERS, "ETag": etag(body)}
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    response = web.Response(text=body, content_type="text/html", charset="utf-8", headers=headers)
    if linked and view is not None:  # a ticket from a link: the page keeps it from now on
        _set_ticket_cookies(request, response, wave, linked)
    response.enable_compression()  # 22 KB -> 8 KB: it matters on 2G
    return response


def _callback_kind(request: web.Request, view: TicketView | None) -> str | None:
    """The kind the holder opted in with, from the call-back cookie (only for a live place)."""
    kind = request.cookies.get("gelombang_callback")
    if view is None or kind not in CONTACT_KINDS:
        return None
    return kind


async def page_join(request: web.Request) -> web.Response:
    """`POST /w/{wave}`: the waiting page's join button without JavaScript, a plain form post.
    Joins (the ticket goes into the cookies, exactly as the API's join sets them), then back
    to the page with 303; a refusal goes back too, named in `?refused=` for the page to say.
    A holder whose cookie already holds a place (or may: it cannot be read this second) goes
    back without joining again."""
    service = request.app[SERVICE]
    held = request.cookies.get(TICKET_COOKIE)
    try:
        wave = _wave(request)
        await service.registry.get(wave)  # unknown wave: 404
    except (NotFound, BadRequest):
        return page_not_found()
    except StoreUnavailable as exc:
        return page_unavailable(exc)
    form = await read_form(request)  # not a form: 415 or 400 in the JSON shape
    page = f"/w/{wave}"
    try:
        view = await _page_ticket_view(request, wave, held)
    except RateLimited:
        return _see_other(page)
    except StoreUnavailable as exc:
        return page_unavailable(exc)
    if view is not None and view["state"] in HOLDING_STATES:
        return _see_other(page)
    token = form.get("enqueue_token", "")
    body: dict[str, Any] = {"enqueue_token": token} if token else {}
    if not token:
        body["registrant"] = form.get("registrant", "")
    try:
        result = await service.join(wave, body, _ip(request), held)
    except ApiError as exc:
        refused = "busy" if exc.code in BUSY_CODES else exc.code
        return _see_other(f"{page}?refused={quote(refused)}")
    response = _see_other(page)
    _set_ticket_cookies(request, response, wave, result.ticket)
    if result.created:
        _forget_callback(request, response, wave)
    return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **NO_STORE})


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
