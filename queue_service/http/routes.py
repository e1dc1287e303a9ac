"""The route table: every route, its handler, and what `endpoint` does around it (shedding with
a page on the waiting page's routes, never on the operators' own)."""

from __future__ import annotations

from aiohttp import web

from queue_service.http import admin, callbacks, proof, public
from queue_service.http.appkeys import OVERLOAD
from queue_service.http.endpoint import (
    CATCH_ALL_PATTERN,
    UNMATCHED_ROUTE,
    Handler,
    endpoint,
    route_label,
    shed_page_response,
    shed_response,
    unmatched,
)
from queue_service.http.prometheus import metrics_handler

NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})
"""Operators watch the overload through these: they are answered however busy the process."""
PAGE_PREFIX = "/w/"
"""The waiting page's routes: people read their answers, so they shed with a page."""


def add_routes(app: web.Application, max_body_bytes: int) -> None:
    p, a, c = public, admin, callbacks
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/api/v1/waves/{wave}/join", p.join),
        ("GET", "/api/v1/waves/{wave}/status", p.status),
        # asked before every request to a protected origin: early, as routes are tried in turn
        ("GET", "/api/v1/waves/{wave}/verify", proof.verify),
        ("POST", "/api/v1/waves/{wave}/leave", p.leave),
        ("POST", "/api/v1/waves/{wave}/complete", p.complete),
        ("GET", "/api/v1/waves/{wave}", p.wave_info),
        ("GET", "/api/v1/waves/{wave}/revoked", p.revoked),
        ("GET", "/api/v1/waves/{wave}/challenge", p.challenge),
        # call-backs (issue 24)
        ("POST", "/api/v1/waves/{wave}/notify", c.notify),
        ("POST", "/api/v1/waves/{wave}/return", c.api_return),
        # public proof (issue 25)
        ("GET", "/api/v1/waves/{wave}/ledger", proof.ledger_page),
        ("GET", "/api/v1/waves/{wave}/ledger/head", proof.ledger_head),
        ("GET", "/api/v1/status", proof.status_board),
        ("GET", "/status", proof.status_page),
        ("GET", "/.well-known/jwks.json", p.jwks),
        ("GET", "/w/{wave}", p.waiting_page),
        ("POST", "/w/{wave}", p.page_join),
        ("POST", "/w/{wave}/notify", c.page_notify),
        ("GET", "/w/{wave}/return", c.return_page),
        ("POST", "/w/{wave}/return", c.page_return),
        ("GET", "/push-sw.js", c.push_worker),
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
            route_label(path),
            handler,
            max_body_bytes,
            guard,
            sheddable=path not in NEVER_SHED,
            shed=shed_page_response if path.startswith(PAGE_PREFIX) else shed_response,
        )
        if method == "GET":
            app.router.add_get(path, wrapped)  # and HEAD
        else:
            app.router.add_route(method, path, wrapped)
    # last: every request that no route above takes (404, or 405 with Allow)
    app.router.add_route(
        "*", CATCH_ALL_PATTERN, endpoint(UNMATCHED_ROUTE, unmatched, max_body_bytes, guard)
    )
