"""Side by side with a peer waiting room (issue 14): the same wrk, the same pinning (server on
one core, load generator and Redis on the other), runs interleaved, CPU per request from each
server's own process. The peer runs outside this repository; its defaults are those of
vercel-labs/nextjs-waiting-room (`next start`, ioredis provider), whose first status poll with
an unknown `__wr_id` cookie is its join. How to set it up: loadtests/RESULTS.md."""

from __future__ import annotations

import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from loadtests.bench.processes import Server
from loadtests.bench.report import Row
from loadtests.bench.wrk import WrkResult, run_wrk

STATUS_TARGET_X = 15.0
"""The issue's aim: at least 15 times the peer's status polls on one core each."""
MAX_PEER_IDS = 10_000
SETTLE_S = 2.0


@dataclass(frozen=True)
class Peer:
    url: str
    pid: int
    """The peer's server process: pinned to the server CPU, its CPU time counted."""
    redis_pid: int | None = None
    """The peer's Redis: pinned with the load generator, as ours is."""
    cookie: str = "__wr_id"
    status_path: str = "/api/waiting-room/status"

    def cpu_seconds(self) -> float:
        process = psutil.Process(self.pid)
        processes = [process, *process.children(recursive=True)]
        return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


@dataclass(frozen=True)
class Sample:
    wrk: WrkResult
    cpu_us: float


def pin(pid: int, cpus: str) -> None:
    """Every thread of `pid` (a Node server runs several) onto `cpus`."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def _sample(cpu_seconds: Callable[[], float], run: Callable[[], WrkResult], what: str) -> Sample:
    time.sleep(SETTLE_S)  # a server still working off the previous run must not share its core
    before = cpu_seconds()
    result = run()
    if result.errors:
        raise RuntimeError(f"{what}: {result.errors} error answers or socket errors in the run")
    return Sample(result, (cpu_seconds() - before) * 1e6 / max(1, result.requests))


def compare(
    peer: Peer,
    ours: Server,
    *,
    tickets: Path,
    status_path: str,
    join_path: str,
    work: Path,
    runs: int,
    duration_s: float,
    connections: int,
    server_cpu: str,
    client_cpu: str,
) -> list[Row]:
    pin(peer.pid, server_cpu)
    if peer.redis_pid is not None:
        pin(peer.redis_pid, client_cpu)
    samples: dict[str, list[Sample]] = {
        name: [] for name in ("peer join", "peer status", "join", "status")
    }
    salt = uuid.uuid4().hex[:8]

    def wrk(url: str, script: str, args: list[str]) -> Callable[[], WrkResult]:
        return lambda: run_wrk(
            url, duration_s=duration_s, connections=connections, script=script,
            script_args=args, cpus=client_cpu,
        )  # fmt: skip

    for n in range(runs):
        prefix = f"bench-{salt}-{n}"
        peer_status = peer.url + peer.status_path
        joined = _sample(
            peer.cpu_seconds,
            wrk(peer_status, "cookie_join.lua", [peer.status_path, peer.cookie, prefix]),
            "peer join",
        )
        samples["peer join"].append(joined)
        # the ids that run joined (one wrk thread: <prefix>-0-1, -2, ...) are the ones polled
        count = max(1, min(MAX_PEER_IDS, joined.wrk.requests - connections))
        ids = work / f"peer-ids-{n}.txt"
        ids.write_text("".join(f"{prefix}-0-{i}\n" for i in range(1, count + 1)))
        samples["peer status"].append(
            _sample(
                peer.cpu_seconds,
                wrk(
                    peer_status,
                    "status.lua",
                    [peer.status_path, str(ids), "Cookie", f"{peer.cookie}="],
                ),
                "peer status",
            )
        )
        samples["status"].append(
            _sample(
                ours.cpu_seconds,
                wrk(ours.url + status_path, "status.lua", [status_path, str(tickets)]),
                "status",
            )
        )
        samples["join"].append(
            _sample(
                ours.cpu_seconds,
                wrk(ours.url + join_path, "join.lua", [join_path, f"{prefix}-ours"]),
                "join",
            )
        )
    return [_row(samples, "status", STATUS_TARGET_X), _row(samples, "join", None)]


def _row(samples: dict[str, list[Sample]], op: str, target_x: float | None) -> Row:
    ours, theirs = samples[op], samples[f"peer {op}"]
    ours_rate = statistics.median(s.wrk.requests_per_s for s in ours)
    peer_rate = statistics.median(s.wrk.requests_per_s for s in theirs)
    times = ours_rate / peer_rate
    ours_cpu = statistics.median(s.cpu_us for s in ours)
    peer_cpu = statistics.median(s.cpu_us for s in theirs)
    ours_p99 = statistics.median(s.wrk.p99_ms for s in ours)
    peer_p99 = statistics.median(s.wrk.p99_ms for s in theirs)
    return Row(
        f"vs peer: {op}",
        "x peer",
        [a.wrk.requests_per_s / b.wrk.requests_per_s for a, b in zip(ours, theirs, strict=True)],
        target=f">= {target_x:g}x peer" if target_x else "informational",
        met=None if target_x is None else times >= target_x,
        p99_ms=ours_p99,
        cpu_us=ours_cpu,
        extra={"ours_per_s": ours_rate, "peer_per_s": peer_rate, "peer_cpu_us": peer_cpu},
        note=(
            f"Gelombang {ours_rate:,.0f} req/s, {ours_cpu:.1f} µs CPU/req, p99 {ours_p99:.1f} ms; "
            f"peer {peer_rate:,.0f} req/s, {peer_cpu:.1f} µs CPU/req, p99 {peer_p99:.1f} ms: "
            f"{times:.1f}x"
        ),
    )
