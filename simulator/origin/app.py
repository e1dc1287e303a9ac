"""The sample origin's app factory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Middleware

from gelombang_origin import (
    JwksVerifier,
    RevocationFeed,
    TokenBindings,
    admission_middleware,
)
from queue_service.tokens import TokenVerifier
from simulator.origin import handlers, sign_in
from simulator.origin.config import OriginConfig
from simulator.origin.errors import errors_and_metrics
from simulator.origin.handlers import FORM_OVERHEAD_BYTES
from simulator.origin.sign_in import SIGNER, EnqueueSigner
from simulator.origin.state import ORIGIN, Origin

UNPROTECTED_PATHS = frozenset(
    {
        "/healthz",
        "/metrics",
        "/api/v1/sign-in",
        "/.well-known/enqueue-jwks.json",
        "/api/v1/admin/capacity",  # its own bearer token (the origin's admin token)
    }
)


def _is_protected(request: web.Request) -> bool:
    return request.path not in UNPROTECTED_PATHS


def create_app(
    config: OriginConfig,
    *,
    verifier: TokenVerifier | JwksVerifier | None = None,
    revocations: RevocationFeed | None = None,
    signer: EnqueueSigner | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The registration origin. With a `verifier`, every route but health, metrics and
    sign-in needs an admission token for `config.wave` (refused once its session ended, with
    `revocations`; bound to its first browser when the wave asks for one-time tokens); without
    one it is open (the no-waiting-room run). With a `signer`, signing in hands out enqueue
    tokens for verified joins (sign_in.py)."""
    middlewares: list[Middleware] = [errors_and_metrics]
    if verifier is not None:
        guard = admission_middleware(
            verifier,
            wave=config.wave,
            is_protected=_is_protected,
            revocations=revocations,
            bindings=TokenBindings(),
        )
        middlewares.append(cast(Middleware, guard))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=config.max_upload_bytes + FORM_OVERHEAD_BYTES,
    )
    app[ORIGIN] = Origin.build(config, clock)
    app[ORIGIN].metrics.protects((config.wave or "*") if verifier is not None else None)
    app.router.add_get("/", handlers.landing, name="landing")
    app.router.add_post("/api/v1/accounts", handlers.create_account, name="account")
    account = "/api/v1/accounts/{account_id}"
    app.router.add_get(account, handlers.show_account, name="show_account")
    app.router.add_post(f"{account}/ktp", handlers.check_ktp, name="ktp")
    app.router.add_post(f"{account}/otp/send", handlers.send_otp, name="otp_send")
    app.router.add_post(f"{account}/otp/verify", handlers.verify_otp, name="otp_verify")
    app.router.add_post(f"{account}/join", handlers.join_wave, name="join")
    if revocations is not None:
        feed = revocations

        async def stop_feed(app: web.Application) -> None:
            await feed.stop()

        app.on_cleanup.append(stop_feed)
    if signer is not None:
        app[SIGNER] = signer
        app.router.add_post("/api/v1/sign-in", sign_in.sign_in, name="sign_in")
        app.router.add_get("/.well-known/enqueue-jwks.json", sign_in.enqueue_jwks)
    app.router.add_get("/healthz", handlers.healthz, name="healthz")
    app.router.add_get("/metrics", handlers.metrics, name="metrics")
    app.router.add_put("/api/v1/admin/capacity", handlers.set_capacity, name="admin")
    if config.capacity_schedule:
        app.cleanup_ctx.append(capacity_schedule)
    return app


async def capacity_schedule(app: web.Application) -> AsyncIterator[None]:
    """The configured capacity steps, from the app's start (a background task)."""
    origin = app[ORIGIN]

    async def follow() -> None:
        started = time.monotonic()
        for at_s, capacity in sorted(origin.config.capacity_schedule):
            await asyncio.sleep(max(0.0, started + at_s - time.monotonic()))
            await origin.set_capacity(capacity)

    task = asyncio.create_task(follow(), name="capacity-schedule")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
