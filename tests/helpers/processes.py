"""Real `gelombang serve` and `gelombang origin` processes for multi-process, fault and load
tests (loopback only), on the one process harness (`gelombang_harness`): each in its
own process group, so nothing outlives a test."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from gelombang_harness import ChildProcess, HttpReady
from queue_service.redis_server import free_port
from tests.helpers.paths import REPO
from tests.helpers.support import ADMIN_TOKEN


class GelombangProcess(ChildProcess):
    """A `gelombang` sub-command on a free loopback port, ready when `ready_path` answers 200."""

    def __init__(
        self, command: list[str], log: Path, *, ready_path: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            command[0],
            [sys.executable, "-m", "gelombang.cli", *command,
             "--host", "127.0.0.1", "--port", str(self.port)],
            log=log,
            ready=HttpReady(self.url + ready_path),
            env={**os.environ, **(env or {})},
            cwd=REPO,
            ready_timeout_s=20.0,
            stop_timeout_s=15.0,
        )  # fmt: skip


@dataclass(frozen=True)
class WorkersListening:
    """/readyz answers as soon as the first worker does; a test that needs all of them
    (SO_REUSEPORT spreads connections) must not race the others' start-up."""

    ready: HttpReady
    port: int
    workers: int

    def __call__(self) -> bool:
        return self.ready() and listening_sockets(self.port) >= self.workers

    def __str__(self) -> str:
        return f"{self.ready}, and {self.workers} workers listening on port {self.port}"


class ServeProcess(GelombangProcess):
    def __init__(
        self,
        redis_url: str,
        state_dir: Path,
        *,
        workers: int = 1,
        config: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        command = ["serve", "--workers", str(workers), "--state-dir", str(state_dir),
                   "--log-format", "text"]  # fmt: skip
        if redis_url:  # none: the service starts its embedded Redis
            command += ["--redis-url", redis_url]
        if config is not None:
            command += ["--config", str(config)]
        # a loaded CI machine's event-loop lag must not make the service shed requests (nor
        # lower its adaptive bounds), except where shedding is what a test is about (it passes
        # its own limits, or "auto")
        defaults = {
            "GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN,
            "GELOMBANG_RATE_LIMITS": "off",
            "GELOMBANG_MAX_LAG_S": "30",
            "GELOMBANG_MAX_CONNECTIONS": "10000",
            "GELOMBANG_MAX_INFLIGHT": "10000",
        }
        super().__init__(command, state_dir / f"serve-{id(self)}.log", ready_path="/readyz",
                         env={**defaults, **(env or {})})  # fmt: skip
        self.workers = workers
        self.ready = WorkersListening(HttpReady(self.url + "/readyz"), self.port, workers)


def listening_sockets(port: int) -> int:
    """TCP sockets in LISTEN state on `port` (one per worker with SO_REUSEPORT)."""
    return sum(
        1
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    )


class OriginProcess(GelombangProcess):
    """The sample origin, verifying tokens against the queue's JWKS."""

    def __init__(self, queue_url: str, log: Path, *, capacity: int = 50) -> None:
        command = ["origin", "--capacity", str(capacity), "--seed", "1",
                   "--jwks-url", f"{queue_url}/.well-known/jwks.json"]  # fmt: skip
        super().__init__(command, log, ready_path="/healthz")
