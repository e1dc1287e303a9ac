"""Public proof handlers (issue 25): the admission ledger, paginated and cacheable, and its signed
head. Thin, like http_public.py; ledger.py does the work."""

from __future__ import annotations

from aiohttp import web

from queue_service.appkeys import LEDGER, SERVICE
from queue_service.errors import BadRequest
from queue_service.http_public import json_response
from queue_service.ledger import PAGE_SIZE
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
    start = _whole_number(request, "from", 0, 0, 10**15)
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
