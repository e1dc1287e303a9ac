"""Run the sample Prakerja-like registration origin (capacity-limited, optionally protected).

    gelombang origin --port 8090 --capacity 50 --wave prakerja-1 \
        --jwks-url http://127.0.0.1:8080/.well-known/jwks.json
    gelombang origin --port 8090 --capacity 50 --unprotected     # no waiting room in front
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gelombang_origin import JwksVerifier
    from simulator.origin.config import OriginConfig

log = logging.getLogger("gelombang.origin")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on")
    parser.add_argument(
        "--scenario",
        help="take capacity, service times and timeout from this scenario's [origin] table "
        "(not its capacity_schedule, which counts from the run's start, not the origin's: "
        "give it as --capacity-schedule, or through the admin call when the run starts)",
    )
    parser.add_argument(
        "--capacity", type=int, help="requests served at once (worker pool; default 50)"
    )
    parser.add_argument(
        "--backlog", type=int, help="requests that may wait for a worker (default 4 x capacity)"
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        help="seconds a request may wait for a worker before a 504 (default 2)",
    )
    parser.add_argument(
        "--service-ms",
        action="append",
        default=[],
        metavar="STEP=MS",
        help="median service time of a step at no load, e.g. ktp=160 (repeatable)",
    )
    parser.add_argument(
        "--service-scale",
        type=float,
        default=1.0,
        help="multiply every step's service time (e.g. 2 = a slower origin)",
    )
    parser.add_argument("--wave", default=None, help="the wave admission tokens must be for")
    parser.add_argument("--seed", type=int, default=None, help="seed of service-time draws")
    protection = parser.add_mutually_exclusive_group(required=True)
    protection.add_argument(
        "--jwks-url", help="the queue's /.well-known/jwks.json: require admission tokens"
    )
    protection.add_argument(
        "--unprotected",
        action="store_true",
        help="no admission check (the run without a waiting room)",
    )
    parser.add_argument(
        "--enqueue-key",
        help="Ed25519 PEM that signs enqueue tokens at sign-in (verified joins); created if "
        "missing. The wave names the origin's /.well-known/enqueue-jwks.json",
    )
    parser.add_argument(
        "--capacity-schedule",
        default="",
        metavar="SECONDS:CAPACITY,...",
        help="capacity steps after start, e.g. 0:50,120:25 (the origin loses half its "
        "capacity after two minutes). Live: PUT /api/v1/admin/capacity with the token in "
        "GELOMBANG_ORIGIN_ADMIN_TOKEN",
    )
    parser.add_argument(
        "--jwks-wait",
        type=float,
        default=30.0,
        help="seconds to keep trying to fetch the JWKS at start-up",
    )


def run(args: argparse.Namespace) -> int:
    import uvloop
    from aiohttp import web

    from gelombang_origin import RevocationFeed
    from queue_service.commands.serve import check_can_listen
    from simulator.origin.app import create_app
    from simulator.origin.sign_in import EnqueueSigner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = origin_config(args)
    except ValueError as exc:
        print(f"gelombang origin: {exc}", file=sys.stderr)
        return 2
    check_can_listen(args.host, args.port)  # a taken port: one line, nothing started

    async def build() -> web.Application:
        verifier = revocations = signer = None
        if args.jwks_url:
            verifier = await _fetch_jwks(args.jwks_url, args.jwks_wait)
            queue_url = args.jwks_url.removesuffix("/.well-known/jwks.json")
            if args.wave:
                revocations = RevocationFeed(queue_url, wave=args.wave)
                await revocations.start()
            signer = EnqueueSigner(_enqueue_key(args.enqueue_key), args.wave, queue_url)
        log.info(
            "origin on http://%s:%d capacity=%d backlog=%d %s",
            args.host,
            args.port,
            config.capacity,
            config.backlog,
            f"protected by {args.jwks_url} (wave {args.wave})" if verifier else "UNPROTECTED",
        )
        return create_app(config, verifier=verifier, revocations=revocations, signer=signer)

    web.run_app(
        build(),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        shutdown_timeout=2.0,
        loop=uvloop.new_event_loop(),
    )
    return 0


def origin_config(args: argparse.Namespace) -> OriginConfig:
    """Flags win over the scenario's [origin] table, which wins over the built-in defaults."""
    from simulator.origin.config import DEFAULT_SERVICE_S, OriginConfig

    capacity, queue_timeout = 50, 2.0
    service_s = dict(DEFAULT_SERVICE_S)
    if args.scenario:
        from simulator.scenario import load_scenario

        origin = load_scenario(args.scenario).origin
        if origin.capacity_schedule and not args.capacity_schedule:
            steps = ",".join(f"{at:g}:{workers}" for at, workers in origin.capacity_schedule)
            log.warning(
                "the scenario's capacity_schedule (%s) is not followed: it counts from the "
                "run's start; --capacity-schedule %s follows it from the origin's start",
                steps,
                steps,
            )
        capacity = origin.capacity
        # The origin's gateway gives up a little before the client does.
        queue_timeout = 0.8 * origin.timeout_s
        known = {k: v / 1000 for k, v in origin.service_ms.items() if k in DEFAULT_SERVICE_S}
        service_s.update(known)
    for item in args.service_ms:
        step, _, value = item.partition("=")
        if step not in DEFAULT_SERVICE_S:
            raise ValueError(
                f"--service-ms: unknown step {step!r}; steps: {list(DEFAULT_SERVICE_S)}"
            )
        try:
            service_s[step] = float(value) / 1000
        except ValueError:
            raise ValueError(f"--service-ms {item!r}: the value must be milliseconds") from None
    capacity = args.capacity or capacity
    return OriginConfig(
        capacity_schedule=parse_capacity_schedule(args.capacity_schedule),
        admin_token=os.environ.get("GELOMBANG_ORIGIN_ADMIN_TOKEN") or None,
        capacity=capacity,
        backlog=args.backlog if args.backlog is not None else 4 * capacity,
        queue_timeout_s=args.queue_timeout or queue_timeout,
        service_s={k: v * args.service_scale for k, v in service_s.items()},
        wave=args.wave,
        seed=args.seed,
    )


def parse_capacity_schedule(text: str) -> tuple[tuple[float, int], ...]:
    """'0:50,120:25' -> ((0.0, 50), (120.0, 25))."""
    steps = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        at, _, capacity = item.partition(":")
        try:
            steps.append((float(at), int(capacity)))
        except ValueError:
            raise ValueError(
                f"--capacity-schedule {item!r}: each step is SECONDS:CAPACITY, e.g. 120:25"
            ) from None
    return tuple(steps)


async def _fetch_jwks(url: str, wait_s: float) -> JwksVerifier:
    import aiohttp

    from gelombang_origin import JwksVerifier

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await JwksVerifier.fetch(url)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if time.monotonic() > deadline:
                message = f"gelombang origin: cannot fetch the JWKS from {url}: {exc}"
                raise SystemExit(message) from None
            log.info("waiting for the JWKS at %s (%s)", url, exc)
            await asyncio.sleep(0.5)


def _enqueue_key(path: str | None) -> Ed25519PrivateKey:
    """The enqueue-token signing key: the given PEM (created when missing), else a new one
    for this run."""
    from pathlib import Path

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from queue_service.tokens import write_private_key

    if path is None:
        return Ed25519PrivateKey.generate()
    pem = Path(path)
    if not pem.exists():
        write_private_key(Ed25519PrivateKey.generate(), pem)
    key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"gelombang origin: {pem} is not an Ed25519 private key")
    return key
