"""The HTTP server around the app: aiohttp's runner, with two things aiohttp does not do.

- Requests that fail before any route sees them (a malformed request line, too many or too
  large headers, broken chunked encoding) are answered in the JSON error shape like every
  other error, and logged as one line without the offending bytes: those may carry a ticket
  or a token, and a client sending garbage must not be able to fill the log.
- The process runs until SIGTERM or SIGINT, then shuts down gracefully within a bound.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from queue_service.endpoint import HTTP_CODES, error_response

log = logging.getLogger(__name__)

MALFORMED_MESSAGES = {
    400: "The request is not valid HTTP, or its headers are too many or too large.",
    413: "The request body is too large.",
    431: "The request headers are too large.",
}


class JsonErrorRequestHandler(RequestHandler):  # type: ignore[misc]
    """aiohttp's connection handler, answering malformed requests in the JSON error shape."""

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
    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """An AppRunner whose connections are JsonErrorRequestHandlers."""

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
            **self._kwargs,
        )


async def serve_until_stopped(
    app: web.Application,
    *,
    host: str,
    port: int,
    backlog: int,
    reuse_port: bool,
    keepalive_timeout_s: float,
    shutdown_timeout_s: float,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve `app` until SIGTERM or SIGINT; always clean up what was started."""
    runner = Runner(
        app,
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
