"""Run real `gelombang serve` processes for multi-process and fault tests (loopback only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from queue_service.redis_server import free_port

from support import ADMIN_TOKEN


class ServeProcess:
    def __init__(
        self,
        redis_url: str,
        state_dir: Path,
        *,
        workers: int = 1,
        port: int | None = None,
        config: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "queue_service.cli", "serve", "--host", "127.0.0.1",
                "--port", str(self.port), "--redis-url", redis_url, "--workers", str(workers),
                "--state-dir", str(state_dir), "--log-format", "text"]  # fmt: skip
        if config is not None:
            args += ["--config", str(config)]
        self._args = args
        self._env = {
            **os.environ,
            "GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN,
            "GELOMBANG_RATE_LIMITS": "off",
            **(env or {}),
        }
        self._log = state_dir / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> ServeProcess:
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(
                self._args, stdout=log, stderr=subprocess.STDOUT, env=self._env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=0.5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"serve did not become ready:\n{self.log_text()}")

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group (supervisor and workers), like a crashed host."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
