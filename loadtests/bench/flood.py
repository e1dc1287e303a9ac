"""A flood of connections against one queue process, and what a polite client on a keep-alive
connection opened before it sees meanwhile: the latency of the answers the process took, the
refusals (503 + Retry-After), the readiness and the connection bound it reports, how long
newcomers wait for their answer, and the process's memory. Each run starts a fresh process, so
every run includes a flood's first second against a process that has not seen one."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from loadtests.bench.processes import Server
from loadtests.bench.report import Row
from loadtests.bench.wrk import WrkResult, run_wrk

ACCEPTED_P99_MS = 250.0
PROBE_INTERVAL_S = 0.02
READINESS_EVERY = 25
"""Polls between two /readyz reads (every half second)."""
NEWCOMERS = 20
"""New clients that connect in the middle of each flood and time their answer."""


@dataclass
class ProbeResult:
    accepted_s: list[float] = field(default_factory=list)
    """Latency of every 2xx answer."""
    refused: int = 0
    """503 overloaded with Retry-After: the documented refusal."""
    other: list[str] = field(default_factory=list)
    """Anything else (another status, a refusal without Retry-After, a broken connection)."""
    readiness: set[str] = field(default_factory=set)
    bounds: list[int] = field(default_factory=list)
    """max_connections as /readyz said it, every half second."""

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
            ready = json.loads(body)
        except ValueError:
            self.result.readiness.add(str(response.status))
            return
        self.result.readiness.add(str(ready.get("status", response.status)))
        if isinstance(ready.get("max_connections"), int):
            self.result.bounds.append(ready["max_connections"])


class Newcomers:
    """`count` clients that connect at once after `after_s`, from threads, each polling once on
    a new connection: the answer (2xx or 503 with Retry-After) and how long it took."""

    def __init__(self, base_url: str, path: str, ticket: str, after_s: float) -> None:
        address = urlsplit(base_url)
        self._host, self._port = address.hostname or "127.0.0.1", address.port or 80
        self._path, self._ticket, self._after_s = path, ticket, after_s
        self.answers: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._one, daemon=True) for _ in range(NEWCOMERS)]
        self._start = threading.Timer(after_s, self._go)
        self._start.daemon = True

    def __enter__(self) -> Newcomers:
        self._start.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._start.join(timeout=30)
        for thread in self._threads:
            thread.join(timeout=30)

    def _go(self) -> None:
        for thread in self._threads:
            thread.start()

    def _one(self) -> None:
        started = time.perf_counter()
        connection = http.client.HTTPConnection(self._host, self._port, timeout=20)
        try:
            connection.request("GET", self._path, headers={"X-Queue-Ticket": self._ticket})
            response = connection.getresponse()
            response.read()
            if response.status < 300:
                outcome = "answered"
            elif response.status == 503 and response.getheader("Retry-After"):
                outcome = "refused"
            else:
                outcome = str(response.status)
        except (OSError, http.client.HTTPException) as error:
            outcome = type(error).__name__
        finally:
            connection.close()
        with self._lock:
            self.answers.append((outcome, time.perf_counter() - started))


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


def overload_rows(
    start_server: Callable[[], AbstractContextManager[Server]],
    tickets: Path,
    status_path: str,
    *,
    runs: int,
    duration_s: float,
    connections: int,
    client_cpu: str,
) -> list[Row]:
    """`runs` floods of `connections` wrk connections polling `status_path`, each against a
    fresh process from `start_server`, watched by a polite client, newcomers in the middle and
    the server's peak memory."""
    polite_ticket = tickets.read_text().split()[0]
    probes: list[PoliteClient] = []
    floods: list[WrkResult] = []
    peaks: list[PeakMemory] = []
    waits: list[float] = []
    newcomer_outcomes: list[str] = []
    server_cpu_s: list[float] = []
    for _ in range(runs):
        with start_server() as server:
            polite = PoliteClient(server.url, status_path, polite_ticket)
            newcomers = Newcomers(server.url, status_path, polite_ticket, duration_s / 2)
            cpu_before = server.cpu_seconds()
            with PeakMemory(server.pgid) as memory, polite, newcomers:
                floods.append(
                    run_wrk(
                        server.url + status_path,
                        duration_s=duration_s,
                        connections=connections,
                        threads=2,
                        script="status.lua",
                        script_args=[status_path, str(tickets)],
                        cpus=client_cpu,
                        timeout_s=10,
                    )
                )
            server_cpu_s.append(server.cpu_seconds() - cpu_before)
        probes.append(polite)
        peaks.append(memory)
        waits += [seconds for _, seconds in newcomers.answers]
        newcomer_outcomes += [outcome for outcome, _ in newcomers.answers]
    p99 = statistics.median(p.result.p99_ms() for p in probes)
    shed = statistics.median(f.non_2xx / max(1, f.requests) for f in floods)
    served = statistics.median(
        f.requests_per_s * (1 - f.non_2xx / max(1, f.requests)) for f in floods
    )
    peak_mb = max(m.peak_bytes for m in peaks) / 2**20
    start_mb = statistics.median(m.start_bytes for m in peaks) / 2**20
    broken = sum(len(p.result.other) for p in probes)
    cpu_us = statistics.median(
        cpu * 1e6 / max(1, f.requests) for cpu, f in zip(server_cpu_s, floods, strict=True)
    )
    cores = statistics.median(cpu / duration_s for cpu in server_cpu_s)
    readiness = sorted(set().union(*(p.result.readiness for p in probes)))
    bounds = [bound for p in probes for bound in p.result.bounds]
    bound_text = (
        f"{min(bounds):,}-{max(bounds):,} (median {statistics.median(bounds):,.0f})"
        if bounds
        else "-"
    )
    wait_median = statistics.median(waits) if waits else float("nan")
    wait_max = max(waits) if waits else float("nan")
    refused_newcomers = newcomer_outcomes.count("refused")
    answered_newcomers = newcomer_outcomes.count("answered")
    other_newcomers = len(newcomer_outcomes) - refused_newcomers - answered_newcomers
    return [
        Row(
            f"overload: status, {connections:,} connections",
            "answers/s",
            [f.requests_per_s for f in floods],
            target=f"accepted p99 < {ACCEPTED_P99_MS:.0f} ms, refusals 503",
            met=p99 < ACCEPTED_P99_MS and broken == 0 and other_newcomers == 0,
            p99_ms=p99,
            cpu_us=cpu_us,
            extra={
                "server_cores": cores,
                "shed_share": shed,
                "served_per_s": served,
                "peak_rss_mb": peak_mb,
                "polite_broken": broken,
                "bound_median": statistics.median(bounds) if bounds else float("nan"),
                "newcomer_wait_median_s": wait_median,
                "newcomer_wait_max_s": wait_max,
            },
            note=(
                f"polite client: p99 {p99:.1f} ms over "
                f"{sum(len(p.result.accepted_s) for p in probes)} answers, "
                f"{sum(p.result.refused for p in probes)} refused 503 + Retry-After, "
                f"{broken} other; flood: {served:,.0f} answered 200/s, {shed:.0%} 503, "
                f"socket errors {statistics.median(f.socket_errors for f in floods):,.0f}/run; "
                f"newcomers: {refused_newcomers} refused, {answered_newcomers} answered, "
                f"{other_newcomers} other, waited median {wait_median:.2f} s, max "
                f"{wait_max:.2f} s; max_connections said {bound_text}; "
                f"RSS {start_mb:.0f} -> {peak_mb:.0f} MB; server busy {cores:.2f} cores; "
                f"/readyz said {', '.join(readiness)}"
            ),
        )
    ]
