"""The benchmarks. Each takes the options and a work folder, starts what it needs (always
stopped again) and returns result rows with their targets (listed in loadtests/RESULTS.md)."""

from __future__ import annotations

import os
import re
import statistics
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from loadtests.bench import flood, peer, redis_ceiling, seed, simulation
from loadtests.bench import idle as idle_waves
from loadtests.bench import reclaim as reclaim_state
from loadtests.bench import tokens as bench_tokens
from loadtests.bench.processes import Server, hello_server, queue_server, redis_server
from loadtests.bench.report import Row
from loadtests.bench.wrk import WrkResult, run_wrk

STATUS_WAVE = "bench-status"
JOIN_WAVE = "bench-join"
IDLE_RATE = 0.01  # admissions/s on throughput waves: polled tickets stay "waiting"
SKIP_FIRST = 100  # the first tickets may be admitted during the run; poll the others
PACE_DELAY_MS = 20
# Targets of the national-scale issue (DESIGN.md's performance targets), same run, same machine
STATUS_SHARE = 0.8
JOIN_SHARE = 0.5
HALF_SATURATION_P99_MS = 10.0


@dataclass(frozen=True)
class Options:
    duration_s: float
    runs: int
    connections: int
    tickets: int
    sample: int
    sizes: list[int]
    admission_s: float
    admission_rate: float
    admission_workers: int
    server_cpu: str
    client_cpu: str
    driver_registrants: int
    model_population: int
    flood_connections: list[int]
    idle_waves: list[int] = field(default_factory=lambda: [100, 400])
    reclaim_tickets: int = 10_000
    reclaim_rounds: int = 3
    peer_url: str | None = None
    peer_pid: int | None = None
    peer_redis_pid: int | None = None
    peer_status_path: str = "/api/waiting-room/status"
    peer_cookie: str = "__wr_id"


def _status_path(wave: str) -> str:
    return f"/api/v1/waves/{wave}/status"


@dataclass(frozen=True)
class Measured:
    wrk: WrkResult
    cpu_us: float
    """Server CPU microseconds per request during the run."""


def _checked(result: WrkResult, what: str) -> WrkResult:
    if result.errors:
        raise RuntimeError(f"{what}: {result.errors} error answers or socket errors in the run")
    return result


def _measured(server: Server, what: str, run: Callable[[], WrkResult]) -> Measured:
    before = server.cpu_seconds()
    result = _checked(run(), what)
    used = server.cpu_seconds() - before
    return Measured(result, used * 1e6 / max(1, result.requests))


def _status_tickets(work: Path, redis_url: str, wave: str, count: int, sample: int) -> Path:
    last = seed.seed_wave(redis_url, wave, admit_rate=IDLE_RATE, count=count)
    first = min(SKIP_FIRST + 1, last)
    seqs = seed.sample_seqs(first, last, sample)
    return seed.write_tickets(work / f"tickets-{wave}.txt", redis_url, wave, seqs)


def _status_run(server: Server, wave: str, tickets: Path, o: Options, cpus: str | None) -> Measured:
    return _measured(
        server,
        "status",
        lambda: run_wrk(
            server.url + _status_path(wave),
            duration_s=o.duration_s,
            connections=o.connections,
            script="status.lua",
            script_args=[_status_path(wave), str(tickets)],
            cpus=cpus,
        ),
    )


def throughput(o: Options, work: Path) -> list[Row]:
    """(a) bare handler, (b) status poll, (c) join; interleaved run by run so that noise from
    other processes on the machine hits all three alike. Server on one CPU, wrk on the other."""
    hello_runs: list[Measured] = []
    status_runs: list[Measured] = []
    join_runs: list[Measured] = []
    run_id = uuid.uuid4().hex[:8]
    with redis_server(work, {int(o.client_cpu)}) as rs:
        tickets = _status_tickets(work, rs.url, STATUS_WAVE, o.tickets, o.sample)
        seed.seed_wave(rs.url, JOIN_WAVE, admit_rate=IDLE_RATE, count=0)
        config = seed.write_config(work / "bench.toml")
        with (
            hello_server(work, o.server_cpu) as hello,
            queue_server(work, rs.url, config, cpus=o.server_cpu) as queue,
        ):
            join_path = f"/api/v1/waves/{JOIN_WAVE}/join"
            for n in range(o.runs):
                hello_runs.append(
                    _measured(
                        hello,
                        "hello",
                        lambda: run_wrk(
                            hello.url + "/hello",
                            duration_s=o.duration_s,
                            connections=o.connections,
                            cpus=o.client_cpu,
                        ),
                    )
                )
                status_runs.append(_status_run(queue, STATUS_WAVE, tickets, o, o.client_cpu))
                join_runs.append(
                    _measured(
                        queue,
                        "join",
                        lambda n=n: run_wrk(  # type: ignore[misc]
                            queue.url + join_path,
                            duration_s=o.duration_s,
                            connections=o.connections,
                            script="join.lua",
                            script_args=[join_path, f"{run_id}-{n}"],
                            cpus=o.client_cpu,
                        ),
                    )
                )
            batches = mean_batch_sizes(queue.url)
    bare = statistics.median(r.wrk.requests_per_s for r in hello_runs)
    bare_cpu = statistics.median(r.cpu_us for r in hello_runs)

    def row(name: str, runs: list[Measured], share: float | None, op: str = "") -> Row:
        rates = [r.wrk.requests_per_s for r in runs]
        ratio = statistics.median(rates) / bare
        cpu_us = statistics.median(r.cpu_us for r in runs)
        return Row(
            name,
            "req/s",
            rates,
            target=f">= {share:.0%} of bare" if share else "reference",
            met=None if share is None else ratio >= share,
            ratio=ratio,
            p99_ms=statistics.median(r.wrk.p99_ms for r in runs),
            cpu_us=cpu_us,
            cpu_ratio=bare_cpu / cpu_us,
            note=f"{batches[op]:.1f} requests per script call on average" if op in batches else "",
        )

    return [
        row("bare aiohttp hello", hello_runs, None),
        row(f"status poll ({o.tickets:,} waiting)", status_runs, STATUS_SHARE, "status"),
        row("join (unique registrants)", join_runs, JOIN_SHARE, "join"),
    ]


BATCH_SIZE = re.compile(r'^gelombang_batch_size_(sum|count)\{op="(\w+)"\} (\S+)$', re.MULTILINE)


def mean_batch_sizes(base_url: str) -> dict[str, float]:
    """Requests per Redis script call by operation, from the server's own /metrics."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, dict[str, float]] = {}
    for kind, op, value in BATCH_SIZE.findall(text):
        totals.setdefault(op, {})[kind] = float(value)
    return {op: t["sum"] / t["count"] for op, t in totals.items() if t.get("count")}


def latency(o: Options, work: Path, saturation: float | None = None) -> list[Row]:
    """(g) p99 of status at half of saturation: wrk paced by a per-connection delay (wrk2 is not
    available). Closed loop per connection, so a stall also delays later sends (coordinated
    omission): this p99 is a lower bound of what an open-loop client would see."""
    rows: list[Row] = []
    with redis_server(work, {int(o.client_cpu)}) as rs:
        tickets = _status_tickets(work, rs.url, STATUS_WAVE, o.tickets, o.sample)
        config = seed.write_config(work / "bench.toml")
        with queue_server(work, rs.url, config, cpus=o.server_cpu) as queue:
            if saturation is None:
                saturation = _status_run(
                    queue, STATUS_WAVE, tickets, o, o.client_cpu
                ).wrk.requests_per_s
            target_rate = saturation / 2
            connections = max(1, round(target_rate * PACE_DELAY_MS / 1000))
            results = [
                _checked(
                    run_wrk(
                        queue.url + _status_path(STATUS_WAVE),
                        duration_s=o.duration_s,
                        connections=connections,
                        script="status.lua",
                        script_args=[_status_path(STATUS_WAVE), str(tickets)],
                        cpus=o.client_cpu,
                        delay_ms=PACE_DELAY_MS,
                    ),
                    "paced status",
                )
                for _ in range(o.runs)
            ]
    p99 = statistics.median(r.p99_ms for r in results)
    achieved = [r.requests_per_s for r in results]
    rows.append(
        Row(
            "status p99 at half saturation",
            "req/s",
            achieved,
            target=f"p99 < {HALF_SATURATION_P99_MS:g} ms",
            met=p99 < HALF_SATURATION_P99_MS,
            p99_ms=p99,
            note=(
                f"saturation {saturation:,.0f} req/s; paced at ~{target_rate:,.0f} req/s with "
                f"{connections} connections x one request per {PACE_DELAY_MS} ms (wrk delay())"
            ),
        )
    )
    return rows


def workers(o: Options, work: Path) -> list[Row]:
    """(d) `--workers 2` vs 1 on status. With 2 cores wrk cannot be pinned apart from two
    workers: nothing is pinned here, and wrk takes CPU from the server in both cases."""
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    with redis_server(work, None) as rs:
        tickets = _status_tickets(work, rs.url, STATUS_WAVE, o.tickets, o.sample)
        config = seed.write_config(work / "bench.toml")
        for count in (1, 2):
            with queue_server(work, rs.url, config, workers=count) as queue:
                for _ in range(o.runs):
                    result = _status_run(queue, STATUS_WAVE, tickets, o, None)
                    rates[count].append(result.wrk.requests_per_s)
                    cpu[count].append(result.cpu_us)
    one = statistics.median(rates[1])
    two = statistics.median(rates[2])
    # CPU the server's processes got (cores): what a second worker could add on this machine
    cores = {n: statistics.median(rates[n]) * statistics.median(cpu[n]) / 1e6 for n in (1, 2)}
    return [
        Row(
            "status, --workers 1 (unpinned)",
            "req/s",
            rates[1],
            target="reference",
            cpu_us=statistics.median(cpu[1]),
        ),
        Row(
            "status, --workers 2 (unpinned)",
            "req/s",
            rates[2],
            target=">= 1.2x workers 1",
            met=two >= 1.2 * one,
            cpu_us=statistics.median(cpu[2]),
            extra={"speedup": two / one},
            note=(
                f"speedup {two / one:.2f}x; the server used {cores[2]:.2f} cores against "
                f"{cores[1]:.2f} with one worker: wrk and Redis share the 2 cores"
            ),
        ),
    ]


def scale(o: Options, work: Path) -> list[Row]:
    """(e) status cost against queue size, and Redis memory per waiting ticket."""
    rows: list[Row] = []
    rates: list[float] = []
    per_ticket = float("nan")
    with redis_server(work, {int(o.client_cpu)}) as rs:
        config = seed.write_config(work / "bench.toml")
        with queue_server(work, rs.url, config, cpus=o.server_cpu) as queue:
            for size in o.sizes:
                wave = f"bench-scale-{size}"
                before = seed.used_memory(rs.url)
                started = time.monotonic()
                tickets = _status_tickets(work, rs.url, wave, size, o.sample)
                seeded_s = time.monotonic() - started
                per_ticket = (seed.used_memory(rs.url) - before) / size
                measured = [
                    _status_run(queue, wave, tickets, o, o.client_cpu) for _ in range(o.runs)
                ]
                runs = [m.wrk.requests_per_s for m in measured]
                rates.append(statistics.median(runs))
                flat = statistics.median(runs) >= 0.85 * rates[0]
                rows.append(
                    Row(
                        f"status poll, {size:,} waiting",
                        "req/s",
                        runs,
                        target=">= 85% of smallest" if rows else "reference",
                        met=flat if rows else None,
                        cpu_us=statistics.median(m.cpu_us for m in measured),
                        p99_ms=statistics.median(m.wrk.p99_ms for m in measured),
                        extra={"bytes_per_ticket": per_ticket, "seed_s": seeded_s},
                        note=f"{per_ticket:.0f} B/ticket in Redis; seeded in {seeded_s:.0f} s",
                    )
                )
    ten_million_gb = per_ticket * 10_000_000 / 2**30
    rows.append(
        Row(
            "memory for 10 M waiting",
            "GiB",
            [ten_million_gb],
            target="< 2 GiB",
            met=ten_million_gb < 2,
            note=f"{per_ticket:.0f} B/ticket measured at {o.sizes[-1]:,} waiting x 10 M",
        )
    )
    return rows


def admission(o: Options, work: Path) -> list[Row]:
    """(f) N processes (`--workers N`) admitting one wave for a while: achieved vs configured
    rate, measured on Redis's own counter and clock after a warm-up that empties the burst."""
    rate = o.admission_rate
    warmup_s = 3.0
    count = int(rate * (o.admission_s + warmup_s + 20) * 1.2) + 100
    with redis_server(work, None) as rs:
        wave = "bench-admission"
        seed.seed_wave(rs.url, wave, admit_rate=rate, count=count)
        config = seed.write_config(work / "bench.toml")
        client = redis.Redis.from_url(rs.url)
        ctl = f"glb:{{w:{wave}}}:ctl"

        def sample() -> tuple[float, int]:
            with client.pipeline(transaction=True) as pipe:
                pipe.time()
                pipe.hget(ctl, "admitted")
                (seconds, micros), admitted = pipe.execute()
            return seconds + micros / 1e6, int(admitted or 0)

        with queue_server(work, rs.url, config, workers=o.admission_workers):
            time.sleep(warmup_s)
            t0, a0 = sample()
            time.sleep(o.admission_s)
            t1, a1 = sample()
        client.close()
    achieved = (a1 - a0) / (t1 - t0)
    error = achieved / rate - 1
    return [
        Row(
            f"admission, {o.admission_workers} processes",
            "admitted/s",
            [achieved],
            target=f"{rate:g}/s +-1%",
            met=abs(error) <= 0.01,
            extra={"configured": rate, "error": error, "seconds": t1 - t0},
            note=f"{a1 - a0} admitted in {t1 - t0:.1f} s (Redis clock): {error:+.2%} off",
        )
    ]


def overload(o: Options, work: Path) -> list[Row]:
    """(j) Load shedding: for each of `flood_connections`, wrk opens that many connections
    against a fresh process on the settings of the environment (the defaults: adaptive bounds;
    GELOMBANG_MAX_CONNECTIONS=2000 pins one) and polls as fast as it can; a polite client on a
    connection opened before the flood measures the answers the process still takes, newcomers
    in the middle how fast they are answered (flood.py). Beyond its bounds the process must
    refuse fast, not queue."""
    rows: list[Row] = []
    with redis_server(work, {int(o.client_cpu)}) as rs:
        tickets = _status_tickets(work, rs.url, STATUS_WAVE, o.tickets, o.sample)
        config = seed.write_config(work / "bench.toml")
        for connections in o.flood_connections:
            rows += flood.overload_rows(
                lambda: queue_server(work, rs.url, config, cpus=o.server_cpu, adaptive_bounds=True),
                tickets,
                _status_path(STATUS_WAVE),
                runs=o.runs,
                duration_s=o.duration_s,
                connections=connections,
                client_cpu=o.client_cpu,
            )
    return rows


def ceiling(o: Options, work: Path) -> list[Row]:
    """(k) One wave's ceiling on one Redis master: Redis CPU per script call of each kind,
    driven through `Store` from this process (pinned to the server's CPU, Redis to the other),
    with `o.tickets` waiting (redis_ceiling.py)."""
    with redis_server(work, {int(o.client_cpu)}) as rs:
        last = seed.seed_wave(rs.url, STATUS_WAVE, admit_rate=17, count=o.tickets)
        seed.seed_wave(rs.url, JOIN_WAVE, admit_rate=IDLE_RATE, count=0)
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {int(o.server_cpu)})
        try:
            runs = [
                redis_ceiling.run(rs.url, JOIN_WAVE, STATUS_WAVE, last, o.duration_s)
                for _ in range(o.runs)
            ]
        finally:
            os.sched_setaffinity(0, affinity)
    return redis_ceiling.ceiling_rows(runs)


def cluster(o: Options, work: Path) -> list[Row]:
    """(l) Many waves over a 3-master Redis Cluster (redis_ceiling.py)."""
    return redis_ceiling.cluster_benchmark(work, o.runs, o.duration_s, seed.wave_fields(IDLE_RATE))


def versus_peer(o: Options, work: Path) -> list[Row]:
    """(m) Status and join side by side with a peer waiting room running on this machine
    (`--peer-url`, `--peer-pid`; peer.py), interleaved run by run, pinned alike."""
    if not (o.peer_url and o.peer_pid):
        raise RuntimeError("the peer benchmark needs --peer-url and --peer-pid (RESULTS.md)")
    other = peer.Peer(
        o.peer_url.rstrip("/"), o.peer_pid, o.peer_redis_pid, o.peer_cookie, o.peer_status_path
    )
    with redis_server(work, {int(o.client_cpu)}) as rs:
        tickets = _status_tickets(work, rs.url, STATUS_WAVE, o.tickets, o.sample)
        seed.seed_wave(rs.url, JOIN_WAVE, admit_rate=IDLE_RATE, count=0)
        config = seed.write_config(work / "bench.toml")
        with queue_server(work, rs.url, config, cpus=o.server_cpu) as queue:
            return peer.compare(
                other,
                queue,
                tickets=tickets,
                status_path=_status_path(STATUS_WAVE),
                join_path=f"/api/v1/waves/{JOIN_WAVE}/join",
                work=work,
                runs=o.runs,
                duration_s=o.duration_s,
                connections=o.connections,
                server_cpu=o.server_cpu,
                client_cpu=o.client_cpu,
            )


def driver(o: Options, work: Path) -> list[Row]:
    """(h) The simulator's live driver holding many concurrent registrants from one core."""
    return simulation.driver_benchmark(work, o.driver_registrants, o.server_cpu, o.client_cpu)


def model(o: Options, work: Path) -> list[Row]:
    """(i) The offline model on a Prakerja-like wave, on one core."""
    return simulation.model_benchmark(work, o.model_population, o.runs, o.client_cpu)


def idle(o: Options, work: Path) -> list[Row]:
    """(l) Waves nobody is in (open and empty, or closed), 100 and 400 of them: what they cost
    one process, and the joins to another wave meanwhile (idle.py)."""
    return idle_waves.idle_rows(
        work, o.idle_waves, duration_s=o.duration_s, server_cpu=o.server_cpu,
        client_cpu=o.client_cpu,
    )  # fmt: skip


def reclaim(o: Options, work: Path) -> list[Row]:
    """(m) A long wave's state: Redis bytes left per finished ticket, and the queue process's
    RSS over rounds of joins that leave or are abandoned (reclaim.py)."""
    return reclaim_state.reclaim_rows(
        work, tickets=o.reclaim_tickets, rounds=o.reclaim_rounds, client_cpu=o.client_cpu
    )


def verify(o: Options, work: Path) -> list[Row]:
    """(n) The verify route a reverse proxy asks before every request to a protected origin
    (nginx auth_request, Caddy forward_auth), against the status poll in the same run,
    interleaved, server on one CPU and wrk on the other: `o.sample` browsers' tokens sent as
    the cookie, rotating (each token's claims are cached after its first check)."""
    status_runs: list[Measured] = []
    verify_runs: list[Measured] = []
    verify_path = f"/api/v1/waves/{STATUS_WAVE}/verify"
    with redis_server(work, {int(o.client_cpu)}) as rs:
        tickets = _status_tickets(work, rs.url, STATUS_WAVE, o.tickets, o.sample)
        keyring = bench_tokens.write_signing_key(work / "state")
        tokens = bench_tokens.write_tokens(work / "tokens.txt", keyring, STATUS_WAVE, o.sample)
        config = seed.write_config(work / "bench.toml")
        with queue_server(work, rs.url, config, cpus=o.server_cpu) as queue:

            def check_run() -> Measured:
                return _measured(
                    queue,
                    "verify",
                    lambda: run_wrk(
                        queue.url + verify_path,
                        duration_s=o.duration_s,
                        connections=o.connections,
                        script="status.lua",
                        script_args=[
                            verify_path,
                            str(tokens),
                            "Cookie",
                            "gelombang_admission=",
                        ],
                        cpus=o.client_cpu,
                    ),
                )

            # every browser's first check verifies the token's signature; later ones find its
            # claims cached: the first run pays the first checks, the measured runs the rest
            first = check_run()
            for _ in range(o.runs):
                status_runs.append(_status_run(queue, STATUS_WAVE, tickets, o, o.client_cpu))
                verify_runs.append(check_run())
    status_rate = statistics.median(r.wrk.requests_per_s for r in status_runs)
    status_cpu = statistics.median(r.cpu_us for r in status_runs)
    verify_cpu = statistics.median(r.cpu_us for r in verify_runs)
    verify_rate = statistics.median(r.wrk.requests_per_s for r in verify_runs)
    return [
        Row(
            f"verify: status poll, same run ({o.tickets:,} waiting)",
            "req/s",
            [r.wrk.requests_per_s for r in status_runs],
            target="reference",
            p99_ms=statistics.median(r.wrk.p99_ms for r in status_runs),
            cpu_us=status_cpu,
        ),
        Row(
            f"verify: auth_request check, {o.sample:,} browsers' tokens",
            "req/s",
            [r.wrk.requests_per_s for r in verify_runs],
            target="CPU/request <= the status poll's (+10%)",
            met=verify_cpu <= 1.1 * status_cpu,
            ratio=verify_rate / status_rate,
            p99_ms=statistics.median(r.wrk.p99_ms for r in verify_runs),
            cpu_us=verify_cpu,
            cpu_ratio=status_cpu / verify_cpu,
            note=f"{verify_rate / status_rate:.2f}x the status poll's req/s, "
            f"{verify_cpu:.1f} against {status_cpu:.1f} us of server CPU per request, each "
            "token's claims cached after its first check",
        ),
        Row(
            f"verify: first checks included, {o.sample:,} new browsers",
            "req/s",
            [first.wrk.requests_per_s],
            target="measured",
            cpu_us=first.cpu_us,
            note=f"the first run: {o.sample:,} tokens' signatures verified among "
            f"{first.wrk.requests:,} checks, {first.cpu_us:.1f} us per check on average",
        ),
    ]


WRK_BENCHMARKS = ("throughput", "latency", "workers", "scale", "overload", "verify")
BENCHMARKS = (
    *WRK_BENCHMARKS, "ceiling", "cluster", "admission", "idle", "reclaim", "driver", "model",
)  # fmt: skip


def autopilot(o: Options, work: Path) -> list[Row]:
    """(o) The autopilot against a real origin that halves mid-run, against the operator's
    fixed setting (loadtests/bench/autopilot.py): convergence, overshoot, goodput."""
    from loadtests.bench.autopilot import bench_rows

    return bench_rows(o.runs, work)


ON_REQUEST = {"peer": versus_peer, "autopilot": autopilot}
"""Benchmarks that need something outside the repository: run only when named."""
