"""Guarantee 12, at the connection level: a connection beyond `max_connections` gets the
documented 503 with Retry-After, and the client can read it, whether it sends its request at
once or only after a while, or never. (Closing a socket with its request unread makes the
kernel send a reset, which makes the client's kernel drop the answer: a network error, and a
browser or load balancer retries at once.) Read on raw sockets, as a load balancer would."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import pytest

from queue_service.redis_server import EmbeddedRedis
from tests.helpers.processes import ServeProcess

LIMIT = 3
REQUEST = b"GET /api/v1/waves/w/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture(scope="module")
def server(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    serve = ServeProcess(
        redis_server.url,
        tmp_path_factory.mktemp("refusal"),
        env={"GELOMBANG_MAX_CONNECTIONS": str(LIMIT)},
    )
    with serve:
        yield serve


@contextlib.contextmanager
def held_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` open keep-alive connections, each shown to have been taken by the server (the
    server may take a moment to notice that the previous test's connections closed)."""
    sockets: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 5
        while len(sockets) < count:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            if sock.recv(4096).startswith(b"HTTP/1.1 200"):
                sockets.append(sock)
                continue
            sock.close()
            assert time.monotonic() < deadline, "the server kept refusing connections"
            time.sleep(0.1)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def read_all(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes; a reset fails the test."""
    sock.settimeout(timeout_s)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            pytest.fail("the refused connection was reset: its answer was lost")
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def assert_refusal(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable", answer[:200]
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Retry-After"]) >= 1
    assert json.loads(body)["error"]["code"] == "overloaded"


def test_a_request_sent_at_once_beyond_the_limit_gets_a_readable_503(
    server: ServeProcess,
) -> None:
    with held_connections(server.port, LIMIT):
        for _ in range(5):  # every time, not by luck of timing
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            with sock:
                sock.sendall(REQUEST)
                assert_refusal(read_all(sock))


def test_a_connection_that_sends_later_or_nothing_still_reads_the_503(
    server: ServeProcess,
) -> None:
    with held_connections(server.port, LIMIT):
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        late = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with silent, late:
            time.sleep(1.0)  # past the wait for a request line: both were answered already
            late.sendall(REQUEST)  # a request after the answer is read and dropped, not reset
            time.sleep(0.2)
            assert_refusal(read_all(late))
            assert_refusal(read_all(silent))


def test_the_refused_connections_left_the_server_serving(server: ServeProcess) -> None:
    """Once the held connections are closed the server serves again: at once here, or after
    the moment a loaded machine takes to tell it that they closed."""
    deadline = time.monotonic() + 5
    while True:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = read_all(sock)
        if answer.startswith(b"HTTP/1.1 200"):
            return
        assert_refusal(answer)  # still counting a closed connection: refused cleanly
        assert time.monotonic() < deadline, "the server kept refusing after the flood"
        time.sleep(0.1)


def test_a_person_on_the_waiting_page_beyond_the_limit_gets_a_page_not_json(
    server: ServeProcess,
) -> None:
    with held_connections(server.port, LIMIT):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with sock:
            sock.sendall(b"GET /w/gelombang-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"Content-Type: text/html" in head and b"Retry-After: " in head
    assert body.startswith(b"<!doctype html") or body.lstrip().lower().startswith(b"<!doctype html")
    assert b'lang="id"' in body and b'lang="en"' in body
