"""The application factory: `create_app(settings)` builds the aiohttp app that tests and `serve`
run. Nothing is opened at import time; Redis, the admission loop and the event-loop monitor
live in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from queue_service import http_admin, http_public, metrics
from queue_service.admission import AdmissionLoop, local_status_max_age_s
from queue_service.appkeys import (
    ADMIN_FAILURES,
    KEYRING,
    OVERLOAD,
    REDIS,
    SERVICE,
    SETTINGS,
    STORE,
)
from queue_service.clock import Clock
from queue_service.endpoint import (
    CATCH_ALL_PATTERN,
    UNMATCHED_ROUTE,
    Handler,
    endpoint,
    route_label,
    unmatched,
)
from queue_service.errors import ApiError
from queue_service.logs import redacted_url
from queue_service.loop_lag import monitor_event_loop_lag
from queue_service.metrics_http import metrics_handler
from queue_service.overload import OverloadGuard
from queue_service.proof_of_work import ChallengeCodec
from queue_service.ratelimit_local import LocalGcra
from queue_service.redis_client import connect_redis
from queue_service.registry import WaveRegistry
from queue_service.service import QueueService
from queue_service.settings import Settings, StartupError
from queue_service.store import Store
from queue_service.tickets import TicketCodec, resolve_secret
from queue_service.tokens import KeyRing, TokenIssuer, TokenVerifier
from queue_service.waves import parse_wave

log = logging.getLogger(__name__)

STARTUP_ATTEMPTS = 20
STARTUP_RETRY_S = 0.5


def load_keyring(settings: Settings) -> KeyRing:
    if settings.signing_keys:
        return KeyRing.from_pem_files(settings.signing_keys)
    return KeyRing.load_or_create(settings.state_dir / "keys")


async def wait_for_redis(store: Store, url: str) -> None:
    """Bounded retries at start-up, each failure logged; then give up loudly."""
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        try:
            await store.ping()
            info = await store.redis.info("server")
            log.info("connected to Redis %s at %s", info.get("redis_version"), redacted_url(url))
            return
        except (ApiError, OSError) as exc:
            log.warning("Redis not reachable (attempt %d/%d): %s", attempt, STARTUP_ATTEMPTS, exc)
            await asyncio.sleep(STARTUP_RETRY_S)
    raise StartupError(
        f"Redis at {redacted_url(url)} did not answer after {STARTUP_ATTEMPTS} attempts"
    )


async def load_config_waves(settings: Settings, store: Store) -> None:
    """Waves from the config file are created when missing; an existing wave is left as it is,
    so a restarted process never reverts a change an SRE made live through the admin API."""
    for definition in settings.waves:
        data = dict(definition)
        wave_id = str(data.pop("id", ""))
        config = parse_wave(wave_id, data)
        if await store.get_wave(wave_id) is None:
            await store.put_wave(config)
            log.info("wave %s created from %s", wave_id, settings.config)
        else:
            log.info("wave %s already exists; config file entry not applied", wave_id)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    keyring: KeyRing | None = None,
    run_admission: bool = True,
) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[KEYRING] = keyring or load_keyring(settings)
    app[OVERLOAD] = OverloadGuard.from_settings(settings)
    app[ADMIN_FAILURES] = LocalGcra(http_admin.FAILED_ADMIN_LOGINS)

    async def state_ctx(app: web.Application) -> AsyncIterator[None]:
        redis = connect_redis(settings)
        store = Store(redis, clock=clock, timeout_s=settings.redis_timeout_s)
        await wait_for_redis(store, settings.redis_url or "")
        await store.load_scripts()
        registry = WaveRegistry(store, settings.rate_limits, clock)
        secret = await resolve_secret(redis, settings.secret)
        keyring_now = app[KEYRING]
        service = QueueService(
            store,
            registry,
            TicketCodec(secret),
            TokenIssuer(keyring_now, settings.issuer),
            TokenVerifier.from_keyring(keyring_now, issuer=settings.issuer, clock=clock),
            ChallengeCodec(secret),
            clock=clock,
            local_status_max_age_s=local_status_max_age_s(settings.admission_interval_s),
        )
        await load_config_waves(settings, store)
        metrics.init_process_series()
        app[REDIS], app[STORE], app[SERVICE] = redis, store, service
        yield
        await service.drain()
        await redis.aclose()

    async def background_ctx(app: web.Application) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(monitor_event_loop_lag(app[OVERLOAD]), name="loop-lag"),
            asyncio.create_task(app[SERVICE].seen.run(), name="seen-flush"),
        ]
        if run_admission:
            loop = AdmissionLoop(app[STORE], app[SERVICE].registry, settings.admission_interval_s)
            tasks.append(asyncio.create_task(loop.run(), name="admission"))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(state_ctx)
    app.cleanup_ctx.append(background_ctx)
    add_routes(app, settings.max_body_bytes)
    return app


NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})
"""Operators watch the overload through these: they are answered however busy the process."""


def add_routes(app: web.Application, max_body_bytes: int) -> None:
    p, a = http_public, http_admin
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/api/v1/waves/{wave}/join", p.join),
        ("GET", "/api/v1/waves/{wave}/status", p.status),
        ("POST", "/api/v1/waves/{wave}/leave", p.leave),
        ("POST", "/api/v1/waves/{wave}/complete", p.complete),
        ("GET", "/api/v1/waves/{wave}", p.wave_info),
        ("GET", "/api/v1/waves/{wave}/revoked", p.revoked),
        ("GET", "/api/v1/waves/{wave}/challenge", p.challenge),
        ("GET", "/.well-known/jwks.json", p.jwks),
        ("GET", "/w/{wave}", p.waiting_page),
        ("GET", "/api/openapi.json", p.openapi),
        ("GET", "/healthz", p.healthz),
        ("GET", "/readyz", p.readyz),
        ("GET", "/metrics", metrics_handler),
        ("GET", "/admin/v1/waves", a.list_waves),
        ("GET", "/admin/v1/waves/{wave}", a.get_wave),
        ("PUT", "/admin/v1/waves/{wave}", a.put_wave),
        ("DELETE", "/admin/v1/waves/{wave}", a.delete_wave),
        ("POST", "/admin/v1/waves/{wave}/{action:pause|resume|close}", a.control_wave),
    ]
    guard = app[OVERLOAD]
    for method, path, handler in routes:
        wrapped = endpoint(
            route_label(path), handler, max_body_bytes, guard, sheddable=path not in NEVER_SHED
        )
        if method == "GET":
            app.router.add_get(path, wrapped)  # and HEAD
        else:
            app.router.add_route(method, path, wrapped)
    # last: every request that no route above takes (404, or 405 with Allow)
    app.router.add_route(
        "*", CATCH_ALL_PATTERN, endpoint(UNMATCHED_ROUTE, unmatched, max_body_bytes, guard)
    )
