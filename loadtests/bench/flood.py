"""A flood of connections against one queue process, and what a polite client on a keep-alive
connection opened before it sees meanwhile: the latency of the answers the process took, the
refusals (503 + Retry-After), the readiness it reports, and the process's memory."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psutil

PROBE_INTERVAL_S = 0.02
READINESS_EVERY = 25
"""Polls between two /readyz reads (every half second)."""


@dataclass
class ProbeResult:
    accepted_s: list[float] = field(default_factory=list)
    """Latency of every 2xx answer."""
    refused: int = 0
    """503 overloaded with Retry-After: the documented refusal."""
    other: list[str] = field(default_factory=list)
    """Anything else (another status, a refusal without Retry-After, a broken connection)."""
    readiness: set[str] = field(default_factory=set)

    def p99_ms(self) -> float:
        if not self.accepted_s:
            return float("nan")
        ordered = sorted(self.accepted_s)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


class PoliteClient:
    """Polls one ticket's status every PROBE_INTERVAL_S on one keep-alive connection (and
    /readyz on another, less often) until stopped, from a thread. Its latencies include its
    own wait for a CPU: on a machine where the flood takes every core they are an upper
    bound of what the process made the client wait."""

    def __init__(self, base_url: str, status_path: str, ticket: str) -> None:
        address = urlsplit(base_url)
        host, port = address.hostname or "127.0.0.1", address.port or 80
        self._status = http.client.HTTPConnection(host, port, timeout=10)
        self._ready = http.client.HTTPConnection(host, port, timeout=10)
        self._path = status_path
        self._headers = {"X-Queue-Ticket": ticket}
        self._stop = threading.Event()
        self.result = ProbeResult()
        self._poll()  # both connections are open before the flood starts
        self._readiness()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PoliteClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._status.close()
        self._ready.close()

    def _run(self) -> None:
        self.result = ProbeResult()
        polls = 0
        while not self._stop.wait(PROBE_INTERVAL_S):
            try:
                self._poll()
                polls += 1
                if polls % READINESS_EVERY == 0:
                    self._readiness()
            except (OSError, http.client.HTTPException) as error:
                self.result.other.append(type(error).__name__)
                self._status.close()  # reconnects on the next request
                self._ready.close()

    def _poll(self) -> None:
        started = time.perf_counter()
        self._status.request("GET", self._path, headers=self._headers)
        response = self._status.getresponse()
        body = response.read()
        if response.status < 300:
            self.result.accepted_s.append(time.perf_counter() - started)
        elif response.status == 503 and response.getheader("Retry-After"):
            self.result.refused += 1
        else:
            self.result.other.append(f"{response.status} {body[:80]!r}")

    def _readiness(self) -> None:
        self._ready.request("GET", "/readyz")
        response = self._ready.getresponse()
        body = response.read()
        try:
            self.result.readiness.add(str(json.loads(body).get("status", response.status)))
        except ValueError:
            self.result.readiness.add(str(response.status))


class PeakMemory:
    """Peak resident memory of one process, sampled from a thread."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_bytes = self._process.memory_info().rss
        self.start_bytes = self.peak_bytes
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
            except psutil.Error:
                return
