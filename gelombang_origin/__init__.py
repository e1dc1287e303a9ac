"""For origins: an aiohttp middleware that lets only admitted registrants through.

    verifier = await JwksVerifier.fetch("http://queue:8080/.well-known/jwks.json")
    revoked = RevocationFeed("http://queue:8080", wave="prakerja-1")   # await revoked.start()
    guard = admission_middleware(
        verifier, wave="prakerja-1", revocations=revoked, bindings=TokenBindings()
    )
    app = web.Application(middlewares=[guard])
    ...
    claims = request[ADMISSION]   # AdmissionClaims of the admitted registrant

The token is read from `Authorization: Bearer`, the `gelombang_admission` cookie, or the
`gelombang_token` query parameter (the queue's redirect carries it there once; the middleware
then moves it into the cookie so it stays out of later URLs).

A token is refused once its session ended: the queue publishes the `jti` of every completed
(or given-up) session (`GET /api/v1/waves/{wave}/revoked`), which `RevocationFeed` reads every
couple of seconds; the origin's own `RevocationFeed.revoke(jti)` takes effect at once. A token of
a wave with `one_time_tokens` works from one browser only: the first request that presents it
binds it (a random binding, sent back as the `gelombang_binding` cookie and the
`X-Gelombang-Binding` header); any later request must carry that binding, so a token copied to
another client, or shared as a link, is refused. `TokenBindings` keeps the bindings in the
process; an origin with several replicas passes `RedisTokenBindings` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from queue_service.tokens import AdmissionClaims, InvalidAdmissionToken, TokenVerifier

log = logging.getLogger(__name__)

ADMISSION = web.RequestKey("gelombang_admission", AdmissionClaims)
TOKEN_COOKIE = "gelombang_admission"
TOKEN_QUERY = "gelombang_token"
BINDING_COOKIE = "gelombang_binding"
BINDING_HEADER = "X-Gelombang-Binding"
REVOCATION_POLL_S = 2.0
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REVOCATION_KEEP_S = 24 * 3600.0

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


class RevocationFeed:
    """The `jti` of ended sessions, read from the queue every `interval_s` (a task started
    with `start()`, stopped with `stop()`), plus the ones this origin revoked itself. It resumes
    after the exact feed position it last read (`next_after`), so no revocation is skipped,
    however many share a millisecond and however often it polls."""

    def __init__(self, queue_url: str, *, wave: str, interval_s: float = REVOCATION_POLL_S) -> None:
        self._url = f"{queue_url.rstrip('/')}/api/v1/waves/{wave}/revoked"
        self._interval_s = interval_s
        self._revoked: dict[str, float] = {}
        self._after = "0-0"
        self._task: asyncio.Task[None] | None = None

    def is_revoked(self, token_id: str) -> bool:
        return token_id in self._revoked

    def revoke(self, token_id: str) -> None:
        self._revoked[token_id] = time.monotonic()

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        """Read what was revoked since the last read (all pages)."""
        while True:
            async with session.get(self._url, params={"after": self._after}) as r:
                r.raise_for_status()
                body = orjson.loads(await r.read())
            for token_id in body["revoked"]:
                self.revoke(str(token_id))
            self._after = str(body["next_after"])
            if not body.get("more"):
                break
        cutoff = time.monotonic() - REVOCATION_KEEP_S  # older tokens have expired anyway
        self._revoked = {k: v for k, v in self._revoked.items() if v >= cutoff}

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    await self.refresh(session)
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                    log.warning("could not read revoked tokens from %s: %s", self._url, exc)
                await asyncio.sleep(self._interval_s)

    async def start(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            try:
                await self.refresh(session)
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                log.warning("could not read revoked tokens from %s: %s", self._url, exc)
        self._task = asyncio.create_task(self._run(), name="revocation-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class OriginHealthMetrics:
    """What the autopilot's default queries read (autopilot.py), for any aiohttp origin: the
    duration and status class of every request the guard lets through, by route. Expose them
    with `app.router.add_get("/metrics", health.handler)` and let Prometheus scrape it.

    The names are the sample origin's (`gelombang_origin_request_duration_seconds`,
    `gelombang_origin_requests_total`), so one pair of queries fits both."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.duration = Histogram(
            "gelombang_origin_request_duration_seconds",
            "Time from request arrival to answer, by route.",
            ["step"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "gelombang_origin_requests_total",
            "Requests answered, by route and status class.",
            ["step", "status_class"],
            registry=self.registry,
        )

    def observe(self, step: str, status: int, seconds: float) -> None:
        status_class = "5xx" if status >= 500 else "4xx" if status >= 400 else "2xx"
        self.requests.labels(step, status_class).inc()
        self.duration.labels(step).observe(seconds)

    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), content_type="text/plain", charset="utf-8"
        )


class Bindings(Protocol):
    async def bind(self, token_id: str, binding: str, ttl_s: int) -> str:
        """Bind `token_id` to `binding` if it is unbound; the binding it has now."""
        ...


class TokenBindings:
    """One-time tokens' bindings in this process (first binding wins), forgotten after the
    token's expiry."""

    def __init__(self) -> None:
        self._bound: dict[str, tuple[str, float]] = {}

    async def bind(self, token_id: str, binding: str, ttl_s: int) -> str:
        now = time.monotonic()
        current = self._bound.get(token_id)
        if current is not None and current[1] > now:
            return current[0]
        if len(self._bound) > 100_000:
            self._bound = {k: v for k, v in self._bound.items() if v[1] > now}
        self._bound[token_id] = (binding, now + ttl_s)
        return binding


class RedisTokenBindings:
    """The same, shared by every replica of the origin through Redis (SET NX, then GET)."""

    def __init__(self, redis: Any, prefix: str = "origin:binding:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def bind(self, token_id: str, binding: str, ttl_s: int) -> str:
        key = self._prefix + token_id
        await self._redis.set(key, binding, nx=True, ex=max(1, ttl_s))
        current = await self._redis.get(key)
        text = current.decode() if isinstance(current, bytes) else str(current or binding)
        return text


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
    revocations: RevocationFeed | None = None,
    bindings: Bindings | None = None,
    health: OriginHealthMetrics | None = None,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Refuse (401 JSON) any protected request without a valid admission token for `wave`,
    a token whose session ended (with `revocations`), and a one-time token presented without
    the binding of the browser that used it first (with `bindings`). With `health`, the
    duration and status of every request let through are measured (OriginHealthMetrics)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_protected(request):
            return await handler(request)
        if health is None:
            return await guarded(request, handler)
        started = time.monotonic()
        status = 500
        try:
            response = await guarded(request, handler)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if status != 401:  # refusals of the guard say nothing of the origin's health
                route = request.match_info.route.name or "other"
                health.observe(route, status, time.monotonic() - started)

    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
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
        if revocations is not None and revocations.is_revoked(claims.token_id):
            return _unauthorized("session_ended", "This admission's session has ended.")
        binding = None
        if claims.one_time and bindings is not None:
            # first use binds the token to this client; any other client is refused
            presented = request.cookies.get(BINDING_COOKIE) or request.headers.get(BINDING_HEADER)
            candidate = presented or secrets.token_urlsafe(16)
            ttl_s = max(1, claims.expires_at - int(time.time()))
            binding = await bindings.bind(claims.token_id, candidate, ttl_s)
            if binding != candidate:
                return _unauthorized(
                    "token_already_used", "This admission token is in use by another browser."
                )
        request[ADMISSION] = claims
        response = await handler(request)
        if binding is not None:
            response.headers[BINDING_HEADER] = binding
            response.set_cookie(
                BINDING_COOKIE,
                binding,
                max_age=max(0, claims.expires_at - int(time.time())),
                httponly=True,
                samesite="Lax",
            )
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
