"""Public proof and integration handlers (issue 25): the admission ledger, paginated and
cacheable, and its signed head (ledger.py does the work); the verify route that lets a reverse
proxy protect an origin (verify.py does the work). Thin, like public.py."""

from __future__ import annotations

import re
import time

from aiohttp import web
from yarl import URL

from queue_service.errors import BadRequest
from queue_service.http.appkeys import ADMISSION_CHECK, LEDGER, SERVICE, SETTINGS, STATUS_BOARD
from queue_service.http.public import json_response
from queue_service.http.status_page import LANGUAGES, STATUS_CACHE_S
from queue_service.ledger import PAGE_SIZE
from queue_service.verify import Refused
from queue_service.waves import validate_wave_id

IMMUTABLE = "public, max-age=31536000, immutable"
"""A full page never changes: a CDN may keep it for good."""
TAIL_MAX_AGE_S = 2
"""The last, growing page and the head: cacheable for a moment (a newsroom's readers share)."""


def _wave(request: web.Request) -> str:
    wave = request.match_info["wave"]
    if wave in request.app[SERVICE].registry.loaded:
        return wave
    return validate_wave_id(wave)


def _whole_number(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 15) or not low <= int(raw) <= high:
        raise BadRequest(
            f"{name} must be a whole number from {low} to {high}.", code="invalid_query"
        )
    return int(raw)


def _cached(request: web.Request, body: object, etag: str, cache_control: str) -> web.Response:
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return json_response(body, headers=headers)


async def ledger_page(request: web.Request) -> web.Response:
    """`?from=<position>&limit=<n>` (defaults 0 and PAGE_SIZE). A full page is immutable."""
    wave = _wave(request)
    start = _whole_number(request, "from", 0, 0, 10**15 - 1)
    limit = _whole_number(request, "limit", PAGE_SIZE, 1, PAGE_SIZE)
    runtime = await request.app[SERVICE].registry.get(wave)
    body = await request.app[LEDGER].page(wave, runtime.uid, start, limit)
    entries = body["entries"]
    last = entries[-1]["hash"][:32] if entries else body["prev"][:32]
    etag = f'"{runtime.uid}-{start}-{len(entries)}-{last}"'
    full = bool(body["complete"])
    return _cached(request, body, etag, IMMUTABLE if full else f"public, max-age={TAIL_MAX_AGE_S}")


async def ledger_head(request: web.Request) -> web.Response:
    wave = _wave(request)
    runtime = await request.app[SERVICE].registry.get(wave)
    head = await request.app[LEDGER].head(wave, runtime.uid)
    etag = f'"{runtime.uid}-{head["count"]}-{head["hash"][:32]}"'
    return _cached(request, head, etag, f"public, max-age={TAIL_MAX_AGE_S}")


# -- the verify route: an origin protected by its reverse proxy, with no code change ---------

TOKEN_COOKIE = "gelombang_admission"
TOKEN_QUERY = "gelombang_token"
BINDING_COOKIE = "gelombang_binding"
BINDING_HEADER = "X-Gelombang-Binding"
ORIGINAL_URI_HEADERS = ("X-Original-URI", "X-Forwarded-Uri")
"""Where nginx (`proxy_set_header X-Original-URI $request_uri`), and Caddy and Traefik (on their
own), tell the verify route what the browser asked for."""
PROXY_STYLES = ("nginx", "forward")
"""How the proxy acts on the answer. nginx `auth_request` takes 2xx, 401 and 403 only, and
copies headers it is told to (the Set-Cookie mirrors below); Caddy `forward_auth` and Traefik
`forwardAuth` (style `forward`) return any non-2xx answer to the browser as it is, so a token
arriving in the URL is moved into a cookie by a redirect, and a refused browser is redirected
to the waiting room."""


BINDING = re.compile(r"[A-Za-z0-9_-]{16,64}")
"""What a binding we gave out looks like (secrets.token_urlsafe)."""


def _parsed(uri: str) -> URL | None:
    """The browser's address as the proxy passed it; None when absent or unparsable."""
    if not uri:
        return None
    try:
        return URL(uri)
    except ValueError:
        return None


def _original_uri(request: web.Request) -> str:
    for name in ORIGINAL_URI_HEADERS:
        value = request.headers.get(name)
        if value and value.startswith("/"):
            return value
    return ""


def _cookies(request: web.Request, names: tuple[str, ...]) -> dict[str, str]:
    """The named cookies, read straight from the header: aiohttp's full parse of every cookie
    was the largest share of a check's cost (our values need no unquoting)."""
    found: dict[str, str] = {}
    for header in request.headers.getall("Cookie", ()):
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name in names and name not in found:
                found[name] = value.strip('"')
    return found


def _presented_token(
    request: web.Request, original: URL | None, cookies: dict[str, str]
) -> tuple[str | None, bool]:
    """The token and whether it came in the browser's URL (then it is moved into a cookie)."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None, False
    if original is not None and TOKEN_QUERY in original.query:
        return original.query[TOKEN_QUERY], True
    if TOKEN_QUERY in request.query:
        return request.query[TOKEN_QUERY], True
    return cookies.get(TOKEN_COOKIE), False


def _cookie(name: str, value: str, max_age: int, secure: bool) -> str:
    """Safe unquoted: tokens are JWTs (base64url and dots), bindings are base64url."""
    cookie = f"{name}={value}; Path=/; Max-Age={max(0, max_age)}; HttpOnly; SameSite=Lax"
    return cookie + "; Secure" if secure else cookie


def _waiting_room(request: web.Request, wave: str) -> str:
    base = request.app[SETTINGS].public_url
    return f"{base.rstrip('/')}/w/{wave}" if base else f"/w/{wave}"


async def verify(request: web.Request) -> web.Response:
    """2xx with the registrant's subject in `X-Gelombang-Subject`, or 401 with where to send
    the browser (`X-Gelombang-Waiting-Room`); `?proxy=forward` for Caddy and Traefik."""
    wave = _wave(request)
    style = request.query.get("proxy", "nginx")
    if style not in PROXY_STYLES:
        raise BadRequest("proxy must be nginx or forward.", code="invalid_query")
    runtime = await request.app[SERVICE].registry.get(wave)
    original = _parsed(_original_uri(request))
    cookies_in = _cookies(request, (TOKEN_COOKIE, BINDING_COOKIE))
    token, from_url = _presented_token(request, original, cookies_in)
    binding = cookies_in.get(BINDING_COOKIE) or request.headers.get(BINDING_HEADER)
    if binding is not None and not BINDING.fullmatch(binding):
        binding = None  # not one we gave out: this browser has none
    result = await request.app[ADMISSION_CHECK].check(
        wave, token, binding, runtime.config.session_ttl_s
    )
    secure = request.headers.get("X-Forwarded-Proto") == "https"
    if isinstance(result, Refused):
        return _refused(request, wave, style, result)
    claims = result.claims
    max_age = claims.expires_at - int(time.time())
    headers = {
        "X-Gelombang-Subject": claims.subject,
        "X-Gelombang-Wave": wave,
        "X-Gelombang-Expires": str(claims.expires_at),
        "Cache-Control": "no-store",
    }
    cookies: dict[str, str] = {}
    """nginx's name for each cookie (deploy/nginx-protect.conf copies it) -> the cookie."""
    if from_url:
        cookies["X-Gelombang-Set-Cookie"] = _cookie(TOKEN_COOKIE, token or "", max_age, secure)
    if result.binding is not None:
        headers[BINDING_HEADER] = result.binding
        if result.first_use:
            cookie = _cookie(BINDING_COOKIE, result.binding, max_age, secure)
            cookies["X-Gelombang-Set-Binding"] = cookie
    if style == "forward" and from_url and original is not None:
        # Caddy and Traefik drop an allowed answer's headers: redirect to the same address
        # without the token, setting the cookies on the way (the token leaves the URL too)
        clean = original.with_query({k: v for k, v in original.query.items() if k != TOKEN_QUERY})
        response = web.Response(status=302, headers={**headers, "Location": str(clean)})
    else:
        response = web.Response(status=200, headers={**headers, **cookies})
    for cookie in cookies.values():
        response.headers.add("Set-Cookie", cookie)
    return response


def _refused(request: web.Request, wave: str, style: str, refused: Refused) -> web.Response:
    room = _waiting_room(request, wave)
    headers = {
        "X-Gelombang-Waiting-Room": room,
        "X-Gelombang-Reason": refused.code,
        "WWW-Authenticate": 'Bearer realm="gelombang"',
        "Cache-Control": "no-store",
    }
    if style == "forward" and "text/html" in request.headers.get("Accept", ""):
        return web.Response(status=302, headers={**headers, "Location": room})
    return json_response(
        {"error": {"code": refused.code, "message": refused.message}}, status=401, headers=headers
    )


# -- the public status board ------------------------------------------------------------------

BOARD_CACHE = f"public, max-age={int(STATUS_CACHE_S)}"


async def status_board(request: web.Request) -> web.Response:
    body, etag = await request.app[STATUS_BOARD].current()
    return _cached(request, body, etag, BOARD_CACHE)


async def status_page(request: web.Request) -> web.Response:
    """In Indonesian unless `?lang=en`: the language is in the address, so a CDN keeps one copy
    of each (no Vary on Accept-Language)."""
    lang = request.query.get("lang", "id")
    if lang not in LANGUAGES:
        raise BadRequest("lang must be id or en.", code="invalid_query")
    text, etag = await request.app[STATUS_BOARD].page(lang)
    headers = {"ETag": etag, "Cache-Control": BOARD_CACHE, "Content-Language": lang}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    response = web.Response(text=text, content_type="text/html", charset="utf-8", headers=headers)
    response.enable_compression()
    return response
