"""The HTTP server around the app: aiohttp's runner, with what aiohttp does not do itself.

- Requests that fail before any route sees them (a malformed request line, too many or too
  large headers, broken chunked encoding) are answered in the JSON error shape like every
  other error, and logged as one line without the offending bytes: those may carry a ticket
  or a token, and a client sending garbage must not be able to fill the log.
- Open connections are bounded (`max_connections`, adaptive by default: overload.py): one more
  is answered with a canned 503 + Retry-After and closed without a reset, so the client reads
  it (refusal.py); it never reaches aiohttp. The event loop then only ever serves a
  bounded number of sockets, so requests it takes are answered quickly however many clients
  pile on (overload.py sheds requests on the connections it keeps). When the bound falls below
  the connections open, the youngest are marked and the next request of each is answered 503
  with `Connection: close` (endpoint.py).
- libuv accepts one connection per loop turn, so under a flood the connections beyond the
  bound would wait in the kernel's listen queue, thousands deep, for tens of seconds before
  their refusal. When a turn's connection is refused, more are taken from the listen queue and
  refused the same way, within a share of the process's time (`REFUSAL_SHARE`), so newcomers
  hear the 503 in a second or two while the requests already accepted keep most of the CPU.
- The process runs until SIGTERM or SIGINT, then shuts down gracefully within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from queue_service import metrics
from queue_service.http.endpoint import HTTP_CODES, error_response
from queue_service.http.refusal import (
    MAX_LINGERING,
    QueuedRefusals,
    RefusedConnection,
    request_target,
)
from queue_service.http.waiting_page import SHED_PAGE_HEADERS, shed_page_bytes
from queue_service.overload import SHED_RETRY_AFTER_S, OverloadGuard

log = logging.getLogger(__name__)

REFUSAL_SHARE = 0.1
"""Of the process's time, the share that refusing connections from the listen queue may take
(timed around the work: accept, read, answer, half-close; about 20 µs each on the reference
host, half again in the kernel besides). A flood that reconnects the moment it is refused would
take every cycle it is given; this keeps the rest for the requests the process accepted."""
REFUSAL_BURST_S = 0.01
"""Refusal time that may be saved up while there is nothing to refuse: one loop turn's worth."""

MALFORMED_MESSAGES = {
    400: "The request is not valid HTTP, or its headers are too many or too large.",
    413: "The request body is too large.",
    431: "The request headers are too large.",
}


def _canned_overload_response() -> bytes:
    body = orjson.dumps(
        {
            "error": {
                "code": "overloaded",
                "message": "The queue is very busy right now; your place is safe. "
                "Please retry shortly.",
            }
        }
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Retry-After: {SHED_RETRY_AFTER_S}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


OVERLOADED = _canned_overload_response()


def _canned_page_response() -> bytes:
    """The waiting page's own refusal: the small bilingual page that says the place is safe
    and reloads itself (what the page's routes answer when they shed a request)."""
    body = shed_page_bytes()
    headers = {**SHED_PAGE_HEADERS, "Connection": "close", "Content-Length": str(len(body))}
    head = "HTTP/1.1 503 Service Unavailable\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return (head + "\r\n").encode() + body


OVERLOADED_PAGE = _canned_page_response()
PAGE_METHODS = frozenset({"GET", "POST"})


def refusal_for(head: bytes) -> bytes:
    """The refusal a connection beyond the limit gets, from the first bytes of its request: a
    person on the waiting page gets a page that stays a page; anything else the JSON error."""
    method, path = request_target(head)
    if method in PAGE_METHODS and path.startswith("/w/"):
        return OVERLOADED_PAGE
    return OVERLOADED


class JsonErrorRequestHandler(RequestHandler):  # type: ignore[misc]
    """aiohttp's connection handler, answering malformed requests in the JSON error shape and
    refusing a connection beyond the server's limit."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        if isinstance(manager, JsonErrorServer) and manager.full():
            self._manager = None  # never registered: nothing to clean up
            # (uvloop's TCP transport is not an asyncio.Transport subclass, only alike)
            manager.refuse(cast(asyncio.Transport, transport))
            manager.refuse_waiting()
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        manager = self._manager
        super().connection_lost(exc)
        if isinstance(manager, JsonErrorServer):
            manager.guard.retiring.discard(self)  # it may have closed before its next request

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.info("malformed request from %s: %d %s", request.remote, status, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already; the connection is broken")
        code = HTTP_CODES.get(status, "bad_request")
        text = MALFORMED_MESSAGES.get(status, "The request could not be handled.")
        response = error_response(status, code, text)
        response.force_close()
        return response


class JsonErrorServer(web.Server):  # type: ignore[misc]
    """aiohttp's server, holding at most `guard.max_connections` connections (the guard's
    ConnectionPool: it counts them and retires the youngest when the bound falls)."""

    def __init__(self, *args: Any, guard: OverloadGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        guard.pool = self
        self.lingering = 0
        """Refused connections being answered and drained (refusal.py)."""
        self.listeners: list[socket.socket] = []
        """Non-blocking duplicates of the listening sockets, to refuse what waits in their
        queues (refuse_waiting); empty until the site is started."""
        self._lingerers: set[asyncio.Task[object]] = set()
        self.queued_refusals = QueuedRefusals(refusal_for, self._loop)
        self._refusal_budget_s = REFUSAL_BURST_S
        self._refusal_budget_at = time.perf_counter()

    def full(self) -> bool:
        return len(self._connections) >= self.guard.max_connections

    def open_count(self) -> int:
        return len(self._connections)

    def retire_beyond(self, limit: int) -> int:
        retiring = self.guard.retiring
        excess = len(self._connections) - limit - len(retiring)
        marked = 0
        if excess > 0:
            for handler in reversed(self._connections):  # in accept order: youngest first
                if handler not in retiring:
                    retiring.add(handler)
                    marked += 1
                    if marked == excess:
                        break
        return marked

    def refusal_closed(self) -> None:
        self.lingering -= 1

    def refuse(self, transport: asyncio.Transport) -> None:
        """Answer a connection beyond the bound with the canned 503 and close it, lingering so
        that the client reads it (refusal.py)."""
        self.guard.refused += 1
        metrics.shed_connections.inc()
        if self.lingering >= MAX_LINGERING:
            transport.write(refusal_for(b""))  # a flood of refusals: the cheap way
            transport.close()
            return
        self.lingering += 1
        refused = RefusedConnection(refusal_for, self.refusal_closed)
        transport.set_protocol(refused)
        refused.connection_made(transport)

    def refuse_waiting(self) -> None:
        """Take connections waiting in the listen queues and refuse them (the oldest first:
        the queue is in arrival order), as long as the refusal budget lasts."""
        now = time.perf_counter()
        budget = min(
            REFUSAL_BURST_S,
            self._refusal_budget_s + (now - self._refusal_budget_at) * REFUSAL_SHARE,
        )
        for listener in self.listeners:
            while budget > 0:
                try:
                    sock, _ = listener.accept()
                except OSError:  # BlockingIOError: the queue is empty; EMFILE: no more now
                    break
                self.guard.refused += 1
                metrics.shed_connections.inc()
                if not self.queued_refusals.refuse(sock):  # its request has not come yet
                    self._refuse_slowly(sock)
                spent, now = now, time.perf_counter()
                budget -= now - spent
        self._refusal_budget_s, self._refusal_budget_at = budget, now

    def _refuse_slowly(self, sock: socket.socket) -> None:
        if self.lingering >= MAX_LINGERING:  # a flood of refusals: the cheap way
            with contextlib.suppress(OSError):
                sock.send(refusal_for(b""))
            sock.close()
            return
        self.lingering += 1
        task = self._loop.create_task(self._linger(sock))
        self._lingerers.add(task)  # a task must be referenced until it is done
        task.add_done_callback(self._lingerers.discard)

    async def _linger(self, sock: socket.socket) -> None:
        closed = False

        def on_closed() -> None:
            nonlocal closed
            if not closed:
                closed = True
                self.refusal_closed()

        try:
            await self._loop.connect_accepted_socket(
                lambda: RefusedConnection(refusal_for, on_closed), sock
            )
        except OSError:  # the client left meanwhile
            sock.close()
            on_closed()

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """An AppRunner whose connections are JsonErrorRequestHandlers, at most as many as the
    guard's `max_connections`."""

    def __init__(self, app: web.Application, *, guard: OverloadGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard

    async def _make_server(self) -> web.Server:
        loop = asyncio.get_running_loop()
        app = self._app
        app._set_loop(loop)
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        return JsonErrorServer(
            app._handle,  # type: ignore[arg-type]  # what aiohttp itself passes here
            request_factory=app._make_request,
            loop=loop,
            guard=self._guard,
            **self._kwargs,
        )


async def serve_until_stopped(
    app: web.Application,
    *,
    host: str,
    port: int,
    backlog: int,
    guard: OverloadGuard,
    reuse_port: bool,
    keepalive_timeout_s: float,
    shutdown_timeout_s: float,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve `app` until SIGTERM or SIGINT; always clean up what was started."""
    runner = Runner(
        app,
        guard=guard,
        access_log=None,
        keepalive_timeout=keepalive_timeout_s,
        shutdown_timeout=shutdown_timeout_s,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port, backlog=backlog, reuse_port=reuse_port)
        await site.start()
        if isinstance(runner.server, JsonErrorServer):
            runner.server.listeners = listening_duplicates(site)
        if on_listening is not None:
            on_listening()
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if isinstance(runner.server, JsonErrorServer):
            for listener in runner.server.listeners:
                listener.close()
            runner.server.queued_refusals.close_all()
        async with asyncio.timeout(shutdown_timeout_s + 5):
            await runner.cleanup()


def listening_duplicates(site: web.TCPSite) -> list[socket.socket]:
    """Non-blocking duplicates of the site's listening sockets (the same kernel queue; closing
    a duplicate leaves the original listening). aiohttp keeps the asyncio server private."""
    listeners = []
    asyncio_server = getattr(site, "_server", None)
    for listening in getattr(asyncio_server, "sockets", None) or ():
        duplicate = socket.socket(fileno=os.dup(listening.fileno()))
        duplicate.setblocking(False)
        listeners.append(duplicate)
    return listeners
