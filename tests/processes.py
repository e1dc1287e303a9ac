"""Real `gelombang serve` and `gelombang origin` processes for multi-process, fault and load
tests (loopback only), each in its own process group so nothing outlives a test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from queue_service.redis_server import free_port
from queue_service.subprocesses import kill_process_group, stop_process_group, wait_until_ready

from support import ADMIN_TOKEN

REPO = Path(__file__).resolve().parents[1]


class ChildProcess:
    """A `gelombang` sub-command on a free loopback port, ready when `ready_path` answers 200."""

    def __init__(
        self, command: list[str], log: Path, *, ready_path: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = [sys.executable, "-m", "queue_service.cli", *command,
                      "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        self._env = {**os.environ, **(env or {})}
        self._log = log
        self._ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> Self:
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(
                self._args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=self._env,
                start_new_session=True,
            )  # fmt: skip
        try:
            wait_until_ready(
                self.url + self._ready_path, self.process, name=self._args[3], timeout_s=timeout_s
            )
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}:\n{self.log_text()}") from None
        return self

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group (supervisor and workers), like a crashed host."""
        if self.process is not None:
            kill_process_group(self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServeProcess(ChildProcess):
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
        defaults = {"GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN, "GELOMBANG_RATE_LIMITS": "off"}
        super().__init__(command, state_dir / f"serve-{id(self)}.log", ready_path="/readyz",
                         env={**defaults, **(env or {})})  # fmt: skip
        self.workers = workers

    def start(self, timeout_s: float = 20.0) -> Self:
        """Ready when every worker listens: /readyz answers as soon as the first one does, and
        a test that needs all of them (SO_REUSEPORT spreads connections) must not race the
        others' start-up."""
        super().start(timeout_s)
        deadline = time.monotonic() + timeout_s
        while listening_sockets(self.port) < self.workers:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fewer than {self.workers} workers listen:\n{self.log_text()}")
            time.sleep(0.05)
        return self


def listening_sockets(port: int) -> int:
    """TCP sockets in LISTEN state on `port` (one per worker with SO_REUSEPORT), from /proc."""
    count = 0
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


class OriginProcess(ChildProcess):
    """The sample origin, verifying tokens against the queue's JWKS."""

    def __init__(self, queue_url: str, log: Path, *, capacity: int = 50) -> None:
        command = ["origin", "--capacity", str(capacity), "--seed", "1",
                   "--jwks-url", f"{queue_url}/.well-known/jwks.json"]  # fmt: skip
        super().__init__(command, log, ready_path="/healthz")
