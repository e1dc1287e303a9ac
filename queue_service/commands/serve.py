"""Run the queue service: one process, or N processes sharing the port (SO_REUSEPORT) and
one Redis; with no --redis-url, a private embedded redis-server is started and stopped with it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
import time
from typing import Any

from queue_service.logs import redacted_url
from queue_service.settings import Settings, SettingsError, StartupError

log = logging.getLogger("queue_service.serve")

SHUTDOWN_TIMEOUT_S = 10.0
RESTART_WINDOW_S = 60.0
MAX_RESTARTS_PER_WINDOW = 10
GC_YOUNG_THRESHOLD = 10_000


ENVIRONMENT = {
    "admin_token": "bearer token of the admin API (operator 'admin'); none: admin API off",
    "admin_tokens": "named operator tokens, name:token,...: the audit log says who acted",
    "secret": "key of ticket MACs and registrant hashes, the same on every replica",
    "signing_keys": "Ed25519 PEM files, comma-separated: the first signs admission tokens",
    "issuer": "iss of admission tokens (gelombang)",
    "public_url": "public base URL: the verify route sends browsers to <it>/w/<wave>, call-back "
    "links point to it",
    "contact_key": "call-backs: AES-256 key of contacts at rest, base64 (none: a dev key)",
    "webhook_secret": "call-backs: HMAC key of the webhook's signature, base64 (none: a dev key)",
    "smtp_url": "call-backs by e-mail: smtp://user:password@host:587 or smtps://... (none: off)",
    "smtp_from": "call-backs by e-mail: the From address",
    "vapid_key": "call-backs by Web Push: VAPID private key, P-256 PEM file (none: a dev key)",
    "vapid_subject": "call-backs by Web Push: who push services may contact (mailto:...)",
    "trusted_proxies": "CIDRs whose X-Forwarded-For (and -Proto) is believed",
    "rate_limits": "off: no rate limits (benchmarks); the rules are the config file's",
    "max_body_bytes": "larger request bodies are refused before they are read (4096)",
    "body_timeout_s": "a request body must arrive whole within this (10)",
    "keepalive_timeout_s": "idle connections, and slow request headers, cut after this (15)",
    "target_queue_delay_s": "mean wait for a turn of the event loop the auto bounds aim at (0.03)",
    "max_lag_s": "event-loop lag before a fast 503 (0.25)",
    "backlog": "listen backlog (4096)",
    "redis_timeout_s": "bound on one Redis round trip before a 503 (1.0)",
    "admission_interval_s": "how often each process runs each wave's admission step (0.05)",
}
EPILOG = (
    "environment (flags, where there is one, win):\n"
    + "\n".join(f"  GELOMBANG_{name.upper():24} {text}" for name, text in ENVIRONMENT.items())
    + "\n  GELOMBANG_HOST, _PORT, _WORKERS, _REDIS_URL, _CONFIG, _STATE_DIR, _LOG_FORMAT,"
    " _LOG_LEVEL, _MAX_CONNECTIONS, _MAX_INFLIGHT   the flags above"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (env GELOMBANG_HOST; 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env GELOMBANG_PORT; 8080)")
    parser.add_argument(
        "--workers", type=int, help="processes sharing the port (env GELOMBANG_WORKERS; 1)"
    )
    parser.add_argument(
        "--redis-url",
        help="redis://host:port/db or redis+cluster://node1:port,node2:port "
        "(env GELOMBANG_REDIS_URL); none = an embedded redis-server",
    )
    parser.add_argument("--config", help="TOML file with [service], [rate_limits], [[waves]]")
    parser.add_argument("--state-dir", help="embedded Redis data and dev keys (.state)")
    parser.add_argument("--log-format", choices=["json", "text"], help="log lines (json)")
    parser.add_argument("--log-level", help="log level (INFO)")
    parser.add_argument(
        "--max-connections",
        metavar="N|auto",
        help="open connections per process before a fast 503 + Retry-After (env "
        "GELOMBANG_MAX_CONNECTIONS); auto, the default: requests/s x target_queue_delay_s, "
        "measured and adjusted as the process runs; a number pins it",
    )
    parser.add_argument(
        "--max-inflight",
        metavar="N|auto",
        help="requests of one route in flight per process before a fast 503 (env "
        "GELOMBANG_MAX_INFLIGHT); auto, the default, follows the same bound; a number pins it",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    from queue_service.settings import load_settings

    overrides = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "redis_url": args.redis_url,
        "config": args.config,
        "state_dir": args.state_dir,
        "log_format": args.log_format,
        "log_level": args.log_level,
        "max_connections": args.max_connections,
        "max_inflight": args.max_inflight,
    }
    return load_settings(overrides)


def check_can_listen(host: str, port: int) -> None:
    """Bind the port once before anything is started, so a taken port or a bad address stops
    the command at once, with one line, instead of after Redis and the workers are up."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    from queue_service.app import load_keyring
    from queue_service.callback_setup import load_callback_keys
    from queue_service.logs import configure_logging
    from queue_service.redis_server import EmbeddedRedis

    settings = settings_from_args(args)  # every setting and wave checked: SettingsError
    check_can_listen(settings.host, settings.port)
    configure_logging(settings.log_format, settings.log_level)
    load_keyring(settings)  # create the development key once, before workers race to
    try:  # call-backs' development keys too; a configured key that is not one stops here
        load_callback_keys(settings)
    except (ValueError, OSError) as exc:
        raise SettingsError(f"call-backs: {exc}") from None
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.state_dir / "redis").start()
        settings = dataclasses.replace(settings, redis_url=embedded.url)
    try:
        if settings.workers == 1:
            serve_process(settings)
        else:
            supervise(settings)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


async def tune_gc(app: object) -> None:
    """Garbage collection tuned for a request server, whose objects either live as long as the
    process (modules, the app, its clients) or only for one request:
    - the long-lived ones are collected once and frozen, so full collections stop rescanning
      them (about 60 000 objects; each full collection took ~16 ms);
    - the youngest generation is collected after 10 000 net allocations instead of 700, so
      fewer collections run while requests are in flight and fewer of their objects get
      promoted to older generations only to be freed there later.
    Measured on the status hot path: GC time per request -2 µs (loadtests/RESULTS.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def serve_process(settings: Settings, *, reuse_port: bool = False) -> None:
    """Run one service process until SIGINT/SIGTERM."""
    import uvloop

    from queue_service.app import create_app
    from queue_service.http.appkeys import OVERLOAD
    from queue_service.http.server import serve_until_stopped
    from queue_service.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    log.info(
        "gelombang queue service pid %d on %s:%d, redis %s, admin API %s",
        os.getpid(),
        settings.host,
        settings.port,
        redacted_url(settings.redis_url or ""),
        "enabled" if settings.admin_tokens_by_name else "disabled",
    )
    app = create_app(settings)
    app.on_startup.append(tune_gc)  # after the cleanup contexts: Redis, scripts, waves loaded

    def listening() -> None:
        log.info("listening on http://%s:%d", settings.host, settings.port)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_until_stopped(
                app,
                host=settings.host,
                port=settings.port,
                backlog=settings.backlog,
                guard=app[OVERLOAD],
                reuse_port=reuse_port,
                keepalive_timeout_s=settings.keepalive_timeout_s,
                shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
                on_listening=listening,
            ))  # fmt: skip
    except OSError as exc:  # the port was taken after the check in run()
        raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None


def _worker_main(settings: Settings) -> None:
    serve_process(settings, reuse_port=True)


def supervise(settings: Settings) -> None:
    """Start N workers on one port; restart a worker that dies (bounded), stop all on a signal."""
    import multiprocessing

    from queue_service.http.prometheus import mark_process_dead, prepare_multiprocess_dir

    metrics_dir = settings.state_dir / f"metrics-{os.getpid()}"
    prepare_multiprocess_dir(metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    context = multiprocessing.get_context("spawn")
    workers: dict[int, Any] = {}
    restarts: list[float] = []
    stopping = False

    def start_worker() -> None:
        process = context.Process(target=_worker_main, args=(settings,), daemon=False)
        process.start()
        assert process.pid is not None
        workers[process.pid] = process

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(settings.workers):
        start_worker()
    log.info("supervising %d workers: %s", settings.workers, sorted(workers))
    try:
        while not stopping:
            time.sleep(0.2)
            for pid, process in list(workers.items()):
                if process.is_alive():
                    continue
                del workers[pid]
                mark_process_dead(pid)
                if stopping:
                    break
                now = time.monotonic()
                restarts[:] = [t for t in restarts if now - t < RESTART_WINDOW_S]
                if len(restarts) >= MAX_RESTARTS_PER_WINDOW:
                    log.error("workers keep dying; giving up")
                    stopping = True
                    break
                restarts.append(now)
                log.warning("worker %d exited with %s; starting another", pid, process.exitcode)
                start_worker()
    finally:
        for process in workers.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S + 2
        for pid, process in workers.items():
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
            mark_process_dead(pid)
        log.info("all workers stopped")
