"""One middleware that turns every failure into the JSON error shape, counts every answer in
the origin's metrics, and maps capacity exhaustion to 503/504."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from simulator.origin.capacity import Overloaded, TimedOut
from simulator.origin.config import STEPS
from simulator.origin.state import ORIGIN
from simulator.origin.validation import InvalidSubmission

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNMETERED = frozenset({"healthz", "metrics", "admin"})


def error_response(
    status: int, code: str, message: str, *, retry_after_s: float | None = None
) -> web.Response:
    headers = {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(retry_after_s)))
    return web.Response(
        status=status,
        body=orjson.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
        headers=headers,
    )


def _step_of(request: web.Request) -> str:
    name = request.match_info.route.name
    return name if name in STEPS else "other"


@web.middleware
async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    route_name = request.match_info.route.name
    if route_name in UNMETERED:
        return await _answer(request, handler)  # errors in the JSON shape, not counted
    origin = request.app[ORIGIN]
    metrics = origin.metrics
    started = time.monotonic()
    response = await _answer(request, handler)
    if response.status == 401:
        metrics.rejected.labels(reason="invalid_token").inc()
    metrics.observe(_step_of(request), response.status, time.monotonic() - started)
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[ORIGIN].metrics
    try:
        return await handler(request)
    except InvalidSubmission as exc:
        return error_response(exc.status, exc.code, exc.message, retry_after_s=exc.retry_after_s)
    except Overloaded:
        metrics.rejected.labels(reason="overload").inc()
        return error_response(
            503, "overloaded", "The server is busy; try again later.", retry_after_s=5
        )
    except TimedOut:
        metrics.rejected.labels(reason="timeout").inc()
        return error_response(504, "timeout", "The server did not answer in time.")
    except ConnectionResetError:
        # The client went away mid-request (closed the tab, timed out): routine under load, and
        # nobody is left to answer. One line, no traceback; 499 as nginx logs it.
        log.info("client disconnected before the answer: %s %s", request.method, request.path)
        return error_response(499, "client_closed_request", "The client closed the connection.")
    except (json.JSONDecodeError, orjson.JSONDecodeError, UnicodeDecodeError):
        return error_response(400, "invalid_json", "The body must be a JSON object.")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
        }.get(exc.status, "bad_request")
        return error_response(exc.status, code, exc.reason or "Bad request.")
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception:  # a bug still answers in the JSON shape, and is logged
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "The server failed on this request.")
