"""The application factory: `create_app(settings)` builds the process that tests and `serve`
run: Redis, the store, the registry, the service and the admin use cases, the background loops,
and the routes (`http/routes.py`) on an aiohttp app. Nothing is opened at import time; Redis,
the admission loop and the event-loop monitor live in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from queue_service import metrics
from queue_service.admin import WaveAdmin
from queue_service.admission import AdmissionLoop, local_status_max_age_s
from queue_service.autopilot_loop import AutopilotLoop
from queue_service.callback_setup import callback_channels, deployment_callbacks
from queue_service.carry_over import CarryOver
from queue_service.clock import Clock
from queue_service.errors import ApiError
from queue_service.http.admin import FAILED_ADMIN_LOGINS
from queue_service.http.appkeys import (
    ADMIN,
    ADMIN_FAILURES,
    ADMISSION_CHECK,
    CALLBACKS,
    KEYRING,
    LEDGER,
    OVERLOAD,
    REDIS,
    SERVICE,
    SETTINGS,
    STATUS_BOARD,
    STORE,
    VAPID_PUBLIC_KEY,
)
from queue_service.http.routes import add_routes
from queue_service.http.status_page import StatusBoard
from queue_service.ledger import Ledger
from queue_service.logs import redacted_url
from queue_service.loop_lag import monitor_event_loop_lag
from queue_service.notify_config import check_channels
from queue_service.overload import OverloadGuard
from queue_service.proof_of_work import ChallengeCodec
from queue_service.ratelimit_local import LocalGcra
from queue_service.redis_client import connect_redis
from queue_service.registry import WaveRegistry
from queue_service.service import QueueService
from queue_service.settings import Settings, StartupError
from queue_service.store import Store, resolve_secret
from queue_service.tickets import TicketCodec
from queue_service.tokens import KeyRing, TokenIssuer, TokenVerifier
from queue_service.verify import AdmissionCheck
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


async def load_config_waves(
    settings: Settings, store: Store, channels: frozenset[str] = frozenset()
) -> None:
    """Waves from the config file are created when missing; an existing wave is left as it is,
    so a restarted process never reverts a change an SRE made live through the admin API. A
    wave asking for call-back channels this deployment cannot send stops start-up."""
    for definition in settings.waves:
        data = dict(definition)
        wave_id = str(data.pop("id", ""))
        config = parse_wave(wave_id, data)
        try:
            check_channels(config.notify, channels, wave_id)
        except ApiError as exc:
            raise StartupError(f"{settings.config}: [[waves]] {wave_id!r}: {exc.message}") from None
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
    run_outbox: bool | None = None,
) -> web.Application:
    """`run_admission`: the admission loop (tests step it by hand); `run_outbox`: the call-back
    senders (default: with the admission loop)."""
    run_outbox = run_admission if run_outbox is None else run_outbox
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[KEYRING] = keyring or load_keyring(settings)
    app[OVERLOAD] = OverloadGuard.from_settings(settings)
    app[ADMIN_FAILURES] = LocalGcra(FAILED_ADMIN_LOGINS)

    async def state_ctx(app: web.Application) -> AsyncIterator[None]:
        redis = connect_redis(settings)
        store = Store(redis, clock=clock, timeout_s=settings.redis_timeout_s)
        await wait_for_redis(store, settings.redis_url or "")
        await store.load_scripts()
        registry = WaveRegistry(store, settings.rate_limits, clock)
        secret = await resolve_secret(redis, settings.secret)
        keyring_now = app[KEYRING]
        callbacks, vapid_public = deployment_callbacks(settings, store, secret)
        service = QueueService(
            store,
            registry,
            TicketCodec(secret),
            TokenIssuer(keyring_now, settings.issuer),
            TokenVerifier.from_keyring(keyring_now, issuer=settings.issuer, clock=clock),
            ChallengeCodec(secret),
            clock=clock,
            local_status_max_age_s=local_status_max_age_s(settings.admission_interval_s),
            callbacks=callbacks,
        )
        await load_config_waves(settings, store, callbacks.channels)
        app[ADMIN] = WaveAdmin(store, registry, callbacks.channels)
        metrics.init_process_series()
        app[REDIS], app[STORE], app[SERVICE] = redis, store, service
        app[CALLBACKS], app[VAPID_PUBLIC_KEY] = callbacks, vapid_public
        app[LEDGER] = Ledger(store, keyring_now)  # public proof (issue 25)
        app[ADMISSION_CHECK] = AdmissionCheck(store, service.verifier, clock)
        app[STATUS_BOARD] = StatusBoard(store, service, registry)
        yield
        await service.drain()
        await redis.aclose()

    async def background_ctx(app: web.Application) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(monitor_event_loop_lag(app[OVERLOAD]), name="loop-lag"),
            asyncio.create_task(app[SERVICE].seen.run(), name="seen-flush"),
        ]
        if run_admission:
            service = app[SERVICE]
            carry = CarryOver(app[STORE], service.registry, app[CALLBACKS], service.codec)
            loop = AdmissionLoop(
                app[STORE], service.registry, settings.admission_interval_s, app[CALLBACKS], carry
            )
            tasks.append(asyncio.create_task(loop.run(), name="admission"))
            autopilot = AutopilotLoop(app[STORE], app[SERVICE].registry)
            tasks.append(asyncio.create_task(autopilot.run(), name="autopilot"))
        async with callback_channels(settings, app[CALLBACKS]) as channels:
            if run_outbox:
                sender = channels.sender(app[STORE], app[SERVICE].registry)
                tasks.append(asyncio.create_task(sender.run(), name="callback-senders"))
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
