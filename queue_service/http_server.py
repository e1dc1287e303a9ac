"""The HTTP server around the app: aiohttp's runner, with what aiohttp does not do itself.

- Requests that fail before any route sees them (a malformed request line, too many or too
  large headers, broken chunked encoding) are answered in the JSON error shape like every
  other error, and logged as one line without the offending bytes: those may carry a ticket
  or a token, and a client sending garbage must not be able to fill the log.
- Open connections are bounded (`max_connections`): one more is answered with a canned 503 +
  Retry-After and closed without a reset, so the client reads it (connection_refusal.py); it
  never reaches aiohttp. The event loop then only ever serves a bounded number of sockets, so
  requests it takes are answered quickly however many clients pile on (overload.py sheds
  requests on the connections it keeps).
- The process runs until SIGTERM or SIGINT, then shuts down gracefully within a bound.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from queue_service import metrics
from queue_service.connection_refusal import MAX_LINGERING, RefusedConnection, request_target
from queue_service.endpoint import HTTP_CODES, error_response
from queue_service.overload import SHED_RETRY_AFTER_S
from queue_service.waiting_page import SHED_PAGE_HEADERS, shed_page_bytes

log = logging.getLogger(__name__)

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
        if isinstance(manager, JsonErrorServer) and len(manager.connections) >= manager.limit:
            manager.refused += 1
            metrics.shed_connections.inc()
            # (uvloop's TCP transport is not an asyncio.Transport subclass, only alike)
            transport = cast(asyncio.Transport, transport)
            self._manager = None  # never registered: nothing to clean up
            if manager.lingering >= MAX_LINGERING:
                transport.write(refusal_for(b""))  # a flood of refusals: the cheap way
                transport.close()
                return
            manager.lingering += 1
            refused = RefusedConnection(refusal_for, manager.refusal_closed)
            transport.set_protocol(refused)
            refused.connection_made(transport)
            return
        super().connection_made(transport)

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
    def __init__(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = max_connections
        self.refused = 0
        self.lingering = 0
        """Refused connections being answered and drained (connection_refusal.py)."""

    def refusal_closed(self) -> None:
        self.lingering -= 1

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """An AppRunner whose connections are JsonErrorRequestHandlers, at most max_connections."""

    def __init__(self, app: web.Application, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._max_connections = max_connections

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
            max_connections=self._max_connections,
            **self._kwargs,
        )


async def serve_until_stopped(
    app: web.Application,
    *,
    host: str,
    port: int,
    backlog: int,
    max_connections: int,
    reuse_port: bool,
    keepalive_timeout_s: float,
    shutdown_timeout_s: float,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve `app` until SIGTERM or SIGINT; always clean up what was started."""
    runner = Runner(
        app,
        max_connections=max_connections,
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
        if on_listening is not None:
            on_listening()
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        async with asyncio.timeout(shutdown_timeout_s + 5):
            await runner.cleanup()
