"""Guarantee 12 in-process, around the adaptive law (tests/unit/test_adaptive_limit.py): the
guard applies the bounds it is given or computes, the server refuses beyond them (what waits
in the listen queue too, in bulk), and retires its youngest connections when the bound falls,
each with a readable 503 + Retry-After. Real sockets on loopback, our runner, no process."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from queue_service.http.endpoint import endpoint
from queue_service.http.refusal import QueuedRefusals
from queue_service.http.server import OVERLOADED, JsonErrorServer, Runner, listening_duplicates
from queue_service.overload import OverloadGuard
from queue_service.settings import Settings

REQUEST = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_numbers_pin_the_bounds_and_auto_adapts_them() -> None:
    pinned = OverloadGuard.from_settings(Settings(max_connections=300, max_inflight=128))
    assert (pinned.max_connections, pinned.max_inflight, pinned.adaptive) == (300, 128, None)
    auto = OverloadGuard.from_settings(Settings(target_queue_delay_s=0.02))
    assert auto.adaptive is not None and auto.adaptive.law.target_delay_s == 0.02
    assert auto.max_connections == auto.max_inflight == auto.adaptive.law.initial
    mixed = OverloadGuard.from_settings(Settings(max_connections=5_000))
    assert mixed.adaptive is not None and mixed.max_connections == 5_000


def test_the_guard_applies_what_the_law_decides_to_the_auto_bounds_only() -> None:
    guard = OverloadGuard.from_settings(Settings(max_connections=5_000))
    guard.observe(0.0, 0.0, 0.0)
    for tick in range(1, 30):  # a flood: 2 s at 10x the target delay, throughput high
        guard.completed += 1_000
        guard.inflight = 3_000
        guard.observe(tick * 0.05, 0.15, 0.3)
    assert guard.max_connections == 5_000  # pinned
    assert guard.adaptive is not None and guard.max_inflight == guard.adaptive.limit < 256
    assert guard.readiness()["adaptive"] is True and guard.saturated


class Held:
    """A client connection that sends a request and reads its answer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def ask(self) -> bytes:
        self.sock.sendall(REQUEST)
        return self.sock.recv(65536)

    def closed_by_server(self) -> bool:
        return self.sock.recv(1) == b""


@asynccontextmanager
async def serving(guard: OverloadGuard) -> AsyncIterator[tuple[int, JsonErrorServer]]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/x", endpoint("/x", ok, 4096, guard))
    runner = Runner(app, guard=guard)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    server = runner.server
    assert isinstance(server, JsonErrorServer)
    server.listeners = listening_duplicates(site)
    try:
        yield server.listeners[0].getsockname()[1], server
    finally:
        for listener in server.listeners:
            listener.close()
        server.queued_refusals.close_all()
        await runner.cleanup()


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def assert_overloaded(answer: bytes, *, closes: bool) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable", answer[:120]
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    assert int(headers["retry-after"]) >= 1
    assert json.loads(body)["error"]["code"] == "overloaded"
    assert (headers.get("connection", "").lower() == "close") is closes


async def test_a_flood_waiting_in_the_listen_queue_hears_its_503_without_delay() -> None:
    guard = OverloadGuard(max_inflight=1_000, max_lag_s=10, max_connections=2)
    loop = asyncio.get_running_loop()
    async with serving(guard) as (port, _):
        held = [Held(port) for _ in range(2)]
        for h in held:
            assert (await loop.run_in_executor(None, h.ask)).startswith(b"HTTP/1.1 200")

        def flood(count: int) -> tuple[list[bytes], float]:
            sockets = []
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(REQUEST)
                sockets.append(sock)
            started = time.monotonic()
            answers = [read_until_closed(sock) for sock in sockets]
            for sock in sockets:
                sock.close()
            return answers, time.monotonic() - started

        answers, waited = await loop.run_in_executor(None, flood, 200)
        for answer in answers:
            assert_overloaded(answer, closes=True)
        assert waited < 5.0 and guard.refused == 200
        for h in held:  # the first ones are kept
            assert (await loop.run_in_executor(None, h.ask)).startswith(b"HTTP/1.1 200")
            h.sock.close()


async def test_when_the_bound_falls_the_youngest_connections_are_retired_with_a_503() -> None:
    guard = OverloadGuard(max_inflight=1_000, max_lag_s=10, max_connections=5)
    loop = asyncio.get_running_loop()
    async with serving(guard) as (port, server):
        held = []
        for _ in range(5):  # one by one: the server keeps them in the order they came
            held.append(Held(port))
            assert (await loop.run_in_executor(None, held[-1].ask)).startswith(b"HTTP/1.1 200")
        guard.max_connections = 3
        assert server.retire_beyond(3) == 2 and server.retire_beyond(3) == 0  # marked once
        answers = [await loop.run_in_executor(None, h.ask) for h in held]
        for answer in answers[:3]:
            assert answer.startswith(b"HTTP/1.1 200")  # the oldest keep being served
        for h, answer in zip(held[3:], answers[3:], strict=True):
            assert_overloaded(answer, closes=True)
            assert await loop.run_in_executor(None, h.closed_by_server)
        for _ in range(50):
            if not guard.retiring and server.open_count() == 3:
                break
            await asyncio.sleep(0.01)
        assert not guard.retiring and server.open_count() == 3
        for h in held:
            h.sock.close()


async def test_a_queued_refusal_without_its_request_yet_is_left_to_the_lingering_one() -> None:
    loop = asyncio.get_running_loop()
    refusals = QueuedRefusals(lambda head: OVERLOADED, loop)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        silent = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        assert refusals.refuse(accepted) is False and len(refusals) == 0
        silent.sendall(REQUEST)
        await asyncio.sleep(0.05)
        assert refusals.refuse(accepted) is True and len(refusals) == 1
        silent.settimeout(5)
        head = silent.recv(65536)
        assert_overloaded(head, closes=True)
        assert silent.recv(1) == b""  # half-closed after the answer: the client reads it all
        silent.sendall(b"more")  # sent after the answer: read and dropped, never a reset
        refusals.close_all()
        silent.close()
        accepted.close()
