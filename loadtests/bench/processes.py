"""The processes a benchmark needs, each started on loopback and always stopped: a private
redis-server (no AOF), the queue service (`gelombang serve`) and the bare reference server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from queue_service.redis_server import EmbeddedRedis, free_port
from queue_service.subprocesses import stop_process_group, wait_until_ready

READY_TIMEOUT_S = 30.0
REPO_ROOT = Path(__file__).resolve().parents[2]


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Server:
    url: str
    pgid: int
    """Process group: the server and any workers it started."""

    def cpu_seconds(self) -> float:
        """CPU time used so far by every live process of the group (user + system). Under a
        contended machine, CPU per request is steadier than requests per second."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue  # exited meanwhile
            if int(fields[2]) == self.pgid:  # fields[0] is the state: pgrp is the 5th field
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total * _TICK_S


def pinned(command: Sequence[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus is not None else list(command)


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    try:
        wait_until_ready(url, process, name=url, timeout_s=READY_TIMEOUT_S)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; see {log_path}:\n{log_path.read_text()[-2000:]}") from None


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
    log_path = work_dir / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            pinned(command(port), cpus),
            stdout=log,
            stderr=log,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + ready_path, process, log_path)
        yield Server(base, process.pid)
    finally:
        stop_process_group(process)


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
) -> Iterator[Server]:
    """`gelombang serve` with rate limits off."""
    env = {**os.environ, "GELOMBANG_RATE_LIMITS": "off"}
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
