"""The Locust rehearsal's SMS/WhatsApp gateway: a WSGI webhook receiver on gevent's own server
(Locust runs on gevent; an asyncio loop would block its hub), run by the process that prepares
the wave (the master, or the single local process).

It only turns an HTTP delivery into a `simulator.callback_inbox.Receipt` (the inbox checks the
signature and the timestamp, and takes each message once) and answers the queue with its
status; what is done with a receipt (counted, handed to the user whose address it is, across
processes) is `on_receipt`'s, in `loadtests.callbacks`. No Locust import.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import Any

from gevent.pywsgi import WSGIServer

from queue_service.channels import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from simulator.callback_inbox import GATEWAY_PATH, Inbox, Receipt

MAX_BODY = 64 * 1024
"""A call-back message is a few hundred bytes; anything far larger is not one."""
REASONS = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized", 404: "404 Not Found"}

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
"""Bind addresses that mean every interface: no machine but this one reaches them by that name."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def advertised_url(host: str, port: int, public_url: str = "") -> str:
    """The URL the queue calls the gateway at: `public_url` when the operator gives one (the
    gateway behind NAT or a proxy); on a wildcard bind, this machine's fully qualified name
    (http://0.0.0.0:… would only ever reach the queue's own machine); otherwise the address it
    listens on."""
    if public_url:
        return public_url
    name = socket.getfqdn() if host in WILDCARD_HOSTS else host
    if ":" in name:
        name = f"[{name}]"  # an IPv6 address
    return f"http://{name}:{port}{GATEWAY_PATH}"


class CallbackGateway:
    def __init__(self, inbox: Inbox, on_receipt: Callable[[Receipt], None]) -> None:
        self.inbox = inbox
        self.on_receipt = on_receipt
        self._server: WSGIServer | None = None
        self.url = ""

    def start(self, host: str = "127.0.0.1", port: int = 0, public_url: str = "") -> str:
        """Listen on `host:port` (0: a free port); the URL the wave's webhook_url names
        (`advertised_url`)."""
        self._server = WSGIServer((host, port), self.app, log=None, error_log=None)
        self._server.start()
        bound_port = self._server.server_port
        if bound_port is None:
            raise RuntimeError(f"the gateway did not bind {host}:{port}")
        self.url = advertised_url(host, bound_port, public_url)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1.0)
            self._server = None

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != GATEWAY_PATH:
            return _answer(start_response, 404)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return _answer(start_response, 400)
        body = environ["wsgi.input"].read(length)
        receipt = self.inbox.take(
            body,
            environ.get(_wsgi(TIMESTAMP_HEADER), ""),
            environ.get(_wsgi(SIGNATURE_HEADER), ""),
            environ.get(_wsgi(IDEMPOTENCY_HEADER), ""),
        )
        self.on_receipt(receipt)
        return _answer(start_response, receipt.status)


def _wsgi(header: str) -> str:
    """Where WSGI puts a request header."""
    return "HTTP_" + header.upper().replace("-", "_")


def _answer(start_response: StartResponse, status: int) -> list[bytes]:
    start_response(REASONS[status], [("Content-Length", "0")])
    return [b""]
