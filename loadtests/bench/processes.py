"""The processes a benchmark needs, each started on loopback and always stopped: a private
redis-server (no AOF), the queue service (`gelombang serve`) and the bare reference server,
on the one process harness (`gelombang_harness`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from gelombang_harness import ChildProcess, HttpReady
from queue_service.redis_server import EmbeddedRedis, free_port

READY_TIMEOUT_S = 30.0
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Server:
    url: str
    process: ChildProcess

    @property
    def pgid(self) -> int:
        """Process group: the server and any workers it started (taskset execs the server,
        so this is also the server's pid)."""
        return self.process.pid

    def cpu_seconds(self) -> float:
        """CPU time used so far by every live process of the group (user + system). Under a
        contended machine, CPU per request is steadier than requests per second."""
        return group_cpu_seconds(self.pgid)


def group_cpu_seconds(pgid: int) -> float:
    total = 0.0
    for process in psutil.process_iter():
        with suppress(psutil.Error, ProcessLookupError):  # exited meanwhile
            if os.getpgid(process.pid) == pgid:
                times = process.cpu_times()
                total += times.user + times.system
    return total


def pinned(command: Sequence[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus is not None else list(command)


@contextmanager
def redis_server(work_dir: Path, cpus: set[int] | None) -> Iterator[EmbeddedRedis]:
    redis = EmbeddedRedis(work_dir / "redis", appendonly=False).start()
    try:
        if cpus is not None:
            import redis as redis_client

            pid = int(redis_client.Redis.from_url(redis.url).info("server")["process_id"])
            os.sched_setaffinity(pid, cpus)
        yield redis
    finally:
        redis.stop()


@contextmanager
def http_server(
    work_dir: Path,
    name: str,
    command: Callable[[int], list[str]],
    *,
    ready_path: str,
    cpus: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """`command(port)` on a free loopback port, pinned to `cpus`, its output in
    `<name>-<port>.log`; yields once `ready_path` answers, and stops its process group."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with ChildProcess(
        name,
        pinned(command(port), cpus),
        log=work_dir / f"{name}-{port}.log",
        ready=HttpReady(base + ready_path),
        env=env,
        cwd=REPO_ROOT,
        ready_timeout_s=READY_TIMEOUT_S,
        stop_timeout_s=15.0,
    ) as process:
        yield Server(base, process)


def gelombang(*args: str) -> list[str]:
    """A `gelombang` command line, from this virtual environment."""
    return [str(Path(sys.executable).with_name("gelombang")), *args]


@contextmanager
def queue_server(
    work_dir: Path,
    redis_url: str,
    config: Path,
    *,
    workers: int = 1,
    cpus: str | None = None,
    adaptive_bounds: bool = False,
) -> Iterator[Server]:
    """`gelombang serve` with rate limits off and, unless `adaptive_bounds`, its shedding bounds
    pinned out of the way (a cost benchmark's bursts must not be shed; the environment may
    still pin them)."""
    pinned = {"GELOMBANG_MAX_CONNECTIONS": "10000", "GELOMBANG_MAX_INFLIGHT": "100000"}
    env = {**({} if adaptive_bounds else pinned), **os.environ, "GELOMBANG_RATE_LIMITS": "off"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def command(port: int) -> list[str]:
        return gelombang(
            "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--redis-url", redis_url, "--config", str(config),
            "--state-dir", str(work_dir / "state"), "--log-level", "WARNING",
        )  # fmt: skip

    with http_server(work_dir, "serve", command, ready_path="/readyz", cpus=cpus, env=env) as s:
        yield s


@contextmanager
def hello_server(work_dir: Path, cpus: str | None) -> Iterator[Server]:
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "loadtests.bench.hello", str(port)]

    with http_server(work_dir, "hello", command, ready_path="/readyz", cpus=cpus) as server:
        yield server
