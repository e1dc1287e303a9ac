"""What a connection beyond the server's `max_connections` gets: the documented 503 with
`Retry-After`, delivered so that the client can read it.

Closing a socket whose request has not been read makes the kernel answer with a TCP reset,
and a reset makes the client's kernel drop the answer it had not read yet: the client sees a
network error, and a browser or load balancer retries at once, which is the opposite of what a
refusal is for. So a refused connection is answered like nginx's "lingering close":

- wait up to `REQUEST_LINE_WAIT_S` for the request line (a client that sends nothing is
  answered when that time is up), so the answer can fit the request: the waiting page, a page
  that refreshes itself in the registrant's language, for `GET /w/...`; the JSON error for
  everything else;
- write the answer, then half-close (FIN): the client reads the answer and the end of it;
- read and discard whatever the client still sends, until it closes or `LINGER_S` has passed,
  and only then close, so nothing unread is left to cause a reset.

Lingering costs a file descriptor and a few hundred bytes per refused connection for at most
`REQUEST_LINE_WAIT_S + LINGER_S`; beyond `MAX_LINGERING` of them at once a refusal is written
and closed at once (the old, cheaper way), so a flood cannot grow it without bound.

Under a flood most refusals are of connections that waited in the listen queue, and those have
sent their request long before they are accepted. `QueuedRefusals` answers them the same way
without a transport, a protocol or a timer each: read the request, write the answer, half-close,
and close with the others in one sweep once `LINGER_S` has passed, after reading and dropping
what came meanwhile. About 20 µs each instead of 80 (loadtests/RESULTS.md); a connection whose
request has not come whole yet goes the way above.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Callable
from typing import cast

REQUEST_LINE_WAIT_S = 0.5
LINGER_S = 2.0
MAX_HEAD_BYTES = 8192
"""Read at most this much of a refused request before answering (the request line is in it)."""
MAX_LINGERING = 10_000

Answer = Callable[[bytes], bytes]
"""The refusal to write, from the request's first bytes (the request line, if it came)."""


class RefusedConnection(asyncio.Protocol):
    def __init__(self, answer: Answer, on_closed: Callable[[], None]) -> None:
        self._answer_for = answer
        self._on_closed = on_closed
        self._transport: asyncio.Transport | None = None
        self._head = b""
        self._answered = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's TCP transport is not an asyncio.Transport subclass, only alike)
        self._transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(REQUEST_LINE_WAIT_S, self._answer)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return  # lingering: read and dropped
        self._head += data[: MAX_HEAD_BYTES - len(self._head)]
        if b"\n" in self._head or len(self._head) >= MAX_HEAD_BYTES:
            self._answer()

    def eof_received(self) -> bool:
        if not self._answered:
            self._answer()
        return False  # the transport closes itself: the client has sent everything

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._on_closed()

    def _answer(self) -> None:
        if self._answered or self._transport is None or self._transport.is_closing():
            return
        self._answered = True
        if self._timer is not None:
            self._timer.cancel()
        self._transport.write(self._answer_for(self._head))
        if self._transport.can_write_eof():
            self._transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, self._transport.close)


class QueuedRefusals:
    """Refusals of connections taken from the listen queue in bulk (see the module doc)."""

    def __init__(self, answer: Answer, loop: asyncio.AbstractEventLoop) -> None:
        self._answer_for = answer
        self._loop = loop
        self._closing: collections.deque[tuple[float, socket.socket]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._closing)

    def refuse(self, sock: socket.socket) -> bool:
        """Answer `sock` now if its request line has come (True); else False, and `sock` is
        left as it was (non-blocking) for the lingering protocol."""
        sock.setblocking(False)
        try:
            head = sock.recv(MAX_HEAD_BYTES, socket.MSG_PEEK)
            if head and b"\n" not in head and len(head) < MAX_HEAD_BYTES:
                return False
            sock.recv(len(head) or 1)  # what was looked at is read, so closing cannot reset
            if head:  # b"": the client has closed already, nothing to answer
                sock.send(self._answer_for(head))
            sock.shutdown(socket.SHUT_WR)
        except BlockingIOError:
            return False  # nothing sent yet
        except OSError:  # reset by the client meanwhile
            sock.close()
            return True
        if len(self._closing) >= MAX_LINGERING:  # a flood of refusals: close at once
            sock.close()
            return True
        self._closing.append((self._loop.time() + LINGER_S, sock))
        self._close_due()
        return True

    def _close_due(self) -> None:
        now = self._loop.time()
        while self._closing and self._closing[0][0] <= now:
            _, sock = self._closing.popleft()
            with contextlib.suppress(OSError):
                while sock.recv(65536):  # what came meanwhile: read and dropped, no reset
                    pass
            sock.close()
        if self._closing and self._timer is None:
            self._timer = self._loop.call_at(self._closing[0][0], self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._close_due()

    def close_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._closing:
            self._closing.popleft()[1].close()


def request_target(head: bytes) -> tuple[str, str]:
    """(method, path) of a request's first line, or ('', '') when it has not come whole."""
    line, found, _ = head.partition(b"\n")
    if not found:
        return "", ""
    parts = line.strip().split(b" ")
    if len(parts) != 3:
        return "", ""
    method, target = parts[0], parts[1]
    path = target.partition(b"?")[0]
    if not (method.isascii() and path.isascii()):
        return "", ""
    return method.decode(), path.decode()
