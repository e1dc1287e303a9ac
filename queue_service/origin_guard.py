"""For origins: an aiohttp middleware that lets only admitted registrants through.

    verifier = await JwksVerifier.fetch("http://queue:8080/.well-known/jwks.json")
    app = web.Application(middlewares=[admission_middleware(verifier, wave="prakerja-1")])
    ...
    claims = request[ADMISSION]   # AdmissionClaims of the admitted registrant

The token is read from `Authorization: Bearer`, the `gelombang_admission` cookie, or the
`gelombang_token` query parameter (the queue's redirect carries it there once; the middleware
then moves it into the cookie so it stays out of later URLs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from queue_service.tokens import AdmissionClaims, InvalidAdmissionToken, TokenVerifier

log = logging.getLogger(__name__)

ADMISSION = web.RequestKey("gelombang_admission", AdmissionClaims)
TOKEN_COOKIE = "gelombang_admission"
TOKEN_QUERY = "gelombang_token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class JwksVerifier:
    """A TokenVerifier fed from a JWKS URL; refetches on an unknown `kid` (key rotation),
    at most once per `min_refresh_s`, so forged kids cannot make it hammer the queue."""

    def __init__(self, url: str, verifier: TokenVerifier, min_refresh_s: float = 30.0) -> None:
        self._url = url
        self._verifier = verifier
        self._min_refresh_s = min_refresh_s
        self._fetched_at = time.monotonic()
        self._lock = asyncio.Lock()

    @classmethod
    async def fetch(cls, url: str, **verifier_kwargs: Any) -> JwksVerifier:
        jwks = await _get_jwks(url)
        return cls(url, TokenVerifier.from_jwks(jwks, **verifier_kwargs))

    async def verify(self, token: str, *, wave: str | None) -> AdmissionClaims:
        try:
            return self._verifier.verify(token, wave=wave)
        except InvalidAdmissionToken as exc:
            if "unknown key" not in str(exc) or not await self._refresh():
                raise
        return self._verifier.verify(token, wave=wave)

    async def _refresh(self) -> bool:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._min_refresh_s:
                return False
            self._fetched_at = time.monotonic()
            try:
                jwks = await _get_jwks(self._url)
                fresh = TokenVerifier.from_jwks(jwks)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("could not refresh JWKS from %s: %s", self._url, exc)
                return False
            self._verifier.update_keys(fresh.public_keys)
            return True


async def _get_jwks(url: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url) as response,
    ):
        response.raise_for_status()
        body: dict[str, Any] = orjson.loads(await response.read())
        return body


def token_from_request(request: web.Request) -> tuple[str | None, bool]:
    """The presented token and whether it came from the query string."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), False
    if TOKEN_QUERY in request.query:
        return request.query[TOKEN_QUERY], True
    return request.cookies.get(TOKEN_COOKIE), False


def admission_middleware(
    verifier: TokenVerifier | JwksVerifier,
    *,
    wave: str | None,
    is_protected: Callable[[web.Request], bool] = lambda request: True,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Refuse (401 JSON) any protected request without a valid admission token for `wave`."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_protected(request):
            return await handler(request)
        token, from_query = token_from_request(request)
        if not token:
            return _unauthorized("admission_required", "An admission token is required.")
        try:
            if isinstance(verifier, JwksVerifier):
                claims = await verifier.verify(token, wave=wave)
            else:
                claims = verifier.verify(token, wave=wave)
        except InvalidAdmissionToken as exc:
            return _unauthorized("invalid_admission_token", f"Admission token refused: {exc}.")
        request[ADMISSION] = claims
        response = await handler(request)
        if from_query:
            response.set_cookie(
                TOKEN_COOKIE,
                token,
                max_age=max(0, claims.expires_at - int(time.time())),
                httponly=True,
                samesite="Lax",
            )
        return response

    return middleware


def _unauthorized(code: str, message: str) -> web.Response:
    return web.Response(
        status=401,
        body=orjson.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="gelombang"'},
    )
