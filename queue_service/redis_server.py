"""The embedded Redis: a private `redis-server` on a free loopback port, AOF on, data in a
local folder, stopped with its owner. Used by `serve`/`demo` without `--redis-url`, and by
the test fixtures."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


class RedisServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        executable: str | None = None,
        password: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """`extra_args`: more redis-server options (tests: `--enable-debug-command local`)."""
        self.data_dir = Path(data_dir)
        self.password = password
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.executable = executable or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        if not Path(self.executable).exists():
            raise RedisServerError(
                "redis-server is not installed; run the README set-up or pass --redis-url"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--logfile",
            str((self.data_dir / "redis.log").resolve()),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                _close_pipe(self._process)
                raise RedisServerError(f"redis-server exited: {err.strip() or 'see redis.log'}")
            if _answers_ping(self.port):
                log.info("embedded redis-server on port %d, data in %s", self.port, self.data_dir)
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port}")

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # SIGTERM: redis flushes the AOF and exits cleanly
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _close_pipe(process)

    def kill(self) -> None:
        """Die like a crash (SIGKILL), for durability tests."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        _close_pipe(process)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _close_pipe(process: subprocess.Popen[bytes]) -> None:
    if process.stderr is not None:
        process.stderr.close()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # NOAUTH: a password is set
    except OSError:
        return False
