"""What every endpoint does around its handler: request id, body-size guard, the one place
where every error becomes the public JSON error shape, and the latency histogram by route.

It wraps each route's handler (`endpoint(...)`) instead of being an aiohttp middleware: a
middleware that does nothing at all already costs 1.5 µs per request (two extra coroutine
layers and a lookup), 6% of a bare handler (loadtests/RESULTS.md). Requests that match no
route reach `unmatched`, a catch-all route that answers 404 or 405 in the same JSON shape."""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import Histogram

from queue_service import metrics
from queue_service.errors import ApiError, NotFound
from queue_service.http.waiting_page import SHED_PAGE_HEADERS, shed_page_bytes
from queue_service.logs import new_request_id, request_id_var
from queue_service.overload import SHED_RETRY_AFTER_S, OverloadGuard

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # fullmatch
# Methods a client can send are unbounded; metric labels must not be.
METHOD_LABELS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
ROUTE_REGEX = re.compile(r"\{(\w+):[^}]*\}")
UNMATCHED_ROUTE = "unmatched"
CATCH_ALL_PATTERN = "/{path:.*}"
CATCH_ALL = "/{path}"  # the catch-all route as aiohttp names it (resource.canonical)


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "store_unavailable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after_s: float | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    out_headers = dict(headers or {})
    if retry_after_s is not None and "Retry-After" not in out_headers:
        out_headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return web.Response(
        status=status,
        body=orjson.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
        headers=out_headers,
    )


@functools.lru_cache(maxsize=1024)
def _duration_series(route: str, method: str, status_class: str) -> Histogram:
    """The labelled child, looked up once per label set: `labels()` validates and takes a lock
    on every call, which showed in the hot-path profile (loadtests/RESULTS.md)."""
    return metrics.http_request_duration.labels(route, method, status_class)


def route_label(path: str) -> str:
    """The route as metrics name it: the path pattern without its regular expressions
    (`/x/{action:a|b}` -> `/x/{action}`), like aiohttp's `resource.canonical`."""
    return ROUTE_REGEX.sub(r"{\1}", path)


def _overloaded() -> web.Response:
    return error_response(
        503,
        "overloaded",
        "The queue is very busy right now; your place is safe. Please retry shortly.",
        retry_after_s=SHED_RETRY_AFTER_S,
    )


def _overloaded_page() -> web.Response:
    return web.Response(status=503, body=shed_page_bytes(), headers=SHED_PAGE_HEADERS)


def shed_response() -> web.Response:
    """503 + Retry-After. The connection stays open: open connections are bounded anyway
    (server.py), and a polite client that reconnected would wait in the listen queue."""
    metrics.shed_requests.inc()
    return _overloaded()


def shed_page_response() -> web.Response:
    """The waiting page's routes shed with a page, not JSON: 503 + Retry-After and the small
    bilingual page, built once, that says the place is safe and reloads itself."""
    metrics.shed_requests.inc()
    return _overloaded_page()


RETIRED = {shed_response: _overloaded, shed_page_response: _overloaded_page}
"""The same refusal, uncounted as a shed request, for a connection the bound retired."""


def retire_response(
    guard: OverloadGuard, connection: object, shed: Callable[[], web.Response]
) -> web.Response:
    """503 + Retry-After + `Connection: close` on a connection the adaptive bound retired
    (overload.py), in the shape the route sheds with (a page stays a page): the request was
    read whole, so closing after the answer cannot reset it."""
    guard.retiring.discard(connection)
    guard.refused += 1
    metrics.shed_connections.inc()
    response = RETIRED.get(shed, shed)()
    response.force_close()
    return response


def endpoint(
    route: str,
    handler: Handler,
    max_body_bytes: int,
    guard: OverloadGuard,
    *,
    sheddable: bool = True,
    shed: Callable[[], web.Response] = shed_response,
) -> Handler:
    """`handler` with a request id (kept from a sane incoming X-Request-Id), load shedding
    (overload.py; `shed` makes the refusal), the body-size guard, every error as the JSON
    error shape, and its latency observed under `route`. One coroutine around the handler, no
    more: this runs on every status poll."""

    inflight = 0  # this route's requests in flight

    async def wrapped(request: web.Request) -> web.StreamResponse:
        nonlocal inflight
        # `guard.retiring` is empty except while the adaptive bound retires connections: on
        # the hot path, one attribute test
        if sheddable and (guard.retiring or not guard.admits(inflight)):
            if request.protocol in guard.retiring:
                return retire_response(guard, request.protocol, shed)
            if not guard.admits(inflight):
                guard.shed += 1
                return shed()  # before anything else is done or read
        incoming = request.headers.get("X-Request-Id")
        request_id = incoming if incoming and REQUEST_ID.fullmatch(incoming) else new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response: web.StreamResponse
        guard.inflight += 1
        inflight += 1
        try:
            try:
                length = request.content_length
                if length is not None and length > max_body_bytes:
                    # refused from the header alone: the body is never read
                    response = error_response(
                        413,
                        "payload_too_large",
                        f"Request bodies are limited to {max_body_bytes} bytes.",
                    )
                else:
                    response = await handler(request)
            except ApiError as exc:
                response = error_response(
                    exc.status,
                    exc.code,
                    exc.message,
                    retry_after_s=exc.retry_after_s,
                    headers=exc.headers,
                )
            except web.HTTPException as exc:
                if exc.status < 400:  # redirects and the like pass through
                    status = exc.status
                    raise
                response = _http_error_response(exc)
            except Exception:
                # the path only: a query string may carry a ticket
                log.exception("unhandled error on %s %s", request.method, request.path)
                response = error_response(
                    500, "internal_error", "Something went wrong on our side."
                )
            status = response.status
            response.headers["X-Request-Id"] = request_id
            return response
        finally:
            guard.inflight -= 1
            guard.completed += 1
            inflight -= 1
            method = request.method if request.method in METHOD_LABELS else "other"
            _duration_series(route, method, f"{status // 100}xx").observe(
                time.perf_counter() - started
            )
            request_id_var.reset(token)

    wrapped.__name__ = getattr(handler, "__name__", "endpoint")
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _http_error_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (a body over client_max_size, ...) in the JSON error shape."""
    code = HTTP_CODES.get(exc.status, "http_error")
    message = exc.reason if exc.status != 413 else "The request body is too large."
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(exc.status, code, message, headers=headers)


async def unmatched(request: web.Request) -> web.StreamResponse:
    """The catch-all route: 405 with `Allow` when another route has this path, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.canonical != CATCH_ALL:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        return error_response(
            405,
            "method_not_allowed",
            "Method Not Allowed",
            headers={"Allow": ",".join(sorted(allowed))},
        )
    raise NotFound("Not Found", code="not_found")
