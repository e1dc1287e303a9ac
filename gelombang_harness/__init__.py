"""Child processes for the demo, the benchmarks and the tests, all handled one way.

A `ChildProcess` starts in its own process group (so a supervisor and its workers stop
together, and a Ctrl-C at the terminal reaches only its parent), writes its output to a log
file, is ready once its readiness check passes, and stops with a bounded grace: SIGTERM to the
whole group, SIGKILL after `stop_timeout_s`. It is reaped with wait4, so its CPU time and peak
memory are known after it exits::

    with ChildProcess("origin", [...], log=logs / "origin.log",
                      ready=HttpReady("http://127.0.0.1:8090/healthz")) as origin:
        ...   # started and ready here; stopped on leaving, on errors too
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

POLL_S = 0.05
LOG_TAIL_CHARS = 3000


class ChildFailed(RuntimeError):
    """A child exited before it was ready, or was not ready in time."""


class Readiness(Protocol):
    """A check that a started child can be used; `str()` says what it waits for."""

    def __call__(self) -> bool: ...


@dataclass(frozen=True)
class HttpReady:
    url: str

    def __call__(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def __str__(self) -> str:
        return f"{self.url} answering 200"


@dataclass(frozen=True)
class PortReady:
    port: int
    host: str = "127.0.0.1"

    def __call__(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def __str__(self) -> str:
        return f"{self.host}:{self.port} accepting connections"


class ChildProcess:
    """One command run as a child in its own process group; see the module docstring.

    Output (stdout and stderr) goes to `log`, emptied at the first start and appended to when
    the same child is started again (as after a crash test), unless `stdout` names a separate
    file for standard output (a command whose output is its result). `env` is the child's
    whole environment (None: this process's)."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log: Path,
        stdout: Path | None = None,
        ready: Readiness | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log = log
        self.stdout = stdout
        self.ready = ready
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.returncode: int | None = None
        self.usage: resource.struct_rusage | None = None
        """CPU time and peak memory of the child over its life, once it has been reaped."""
        self._process: subprocess.Popen[bytes] | None = None
        self._group_gone = False
        """Set once the group was swept after its leader exited: never signalled again, as
        the id may be reused."""

    # -- starting ---------------------------------------------------------------------------

    def spawn(self) -> Self:
        """Start the child without waiting for it to be ready (see `wait_ready`)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            log = files.enter_context(self.log.open("ab" if self._process else "wb"))
            out = files.enter_context(self.stdout.open("wb")) if self.stdout else log
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        self.returncode = self.usage = None
        self._group_gone = False
        return self

    def wait_ready(self, timeout_s: float | None = None) -> Self:
        """Poll the readiness check; fail early if the child exits, or after the timeout.
        On failure the child is stopped and the error carries the end of its log."""
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while self.ready is not None and not self.ready():
            if self.poll() is not None:
                problem = f"{self.name} exited with {self.returncode} before it was ready"
            elif time.monotonic() > deadline:
                problem = f"{self.name} was not ready within {timeout_s:g} s ({self.ready})"
            else:
                time.sleep(POLL_S)
                continue
            self.stop()
            raise ChildFailed(f"{problem}; see {self.log}:\n{self.log_tail()}")
        return self

    def start(self, timeout_s: float | None = None) -> Self:
        """Spawn, then wait until ready."""
        try:
            return self.spawn().wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def run(self, timeout_s: float) -> int:
        """Spawn and wait for the child to end by itself; stopped, and TimeoutError raised,
        if it still runs after `timeout_s`. Returns its exit code."""
        self.spawn()
        try:
            return self.wait(timeout_s)
        finally:
            self.stop()

    # -- state ------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group id."""
        if self._process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self.poll() is None

    def poll(self) -> int | None:
        """The exit code once the child has exited (reaping it), else None."""
        process = self._process
        if process is None or self.returncode is not None:
            return self.returncode
        try:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere; Popen knows how it ended
            self.returncode = process.poll()
            return self.returncode
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        self.usage = usage
        process.returncode = self.returncode  # so Popen never waits for the pid again
        return self.returncode

    def wait(self, timeout_s: float) -> int:
        """Wait for the child to exit; TimeoutError if it is still running after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while (code := self.poll()) is None and self._process is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout_s:g} s")
            time.sleep(POLL_S)
        if code is None:
            raise RuntimeError(f"{self.name} was never started")
        return code

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of the log (what a failure message shows)."""
        return self.log_text()[-chars:]

    # -- stopping ---------------------------------------------------------------------------

    def terminate(self) -> None:
        """SIGTERM the whole group: the child stops gracefully (see `stop`)."""
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole group, like a crashed host, and reap the child."""
        self._signal_group(signal.SIGKILL)
        if self._process is not None:
            self.wait(self.stop_timeout_s)
            self._group_gone = True

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it if the child outlives its grace; no-op when stopped."""
        stop_all([self])

    def _signal_group(self, signum: int) -> None:
        if self._process is None or self._group_gone:
            return
        # The group outlives a leader that has exited while any member lives (a worker
        # whose supervisor died), so the group is signalled even then.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_all(children: Iterable[ChildProcess]) -> None:
    """Stop several children at once: SIGTERM every group, give them their grace together,
    then SIGKILL whatever is left. Whatever stays in a group after its leader exits is killed
    too, so nothing outlives the call."""
    started = [child for child in children if child._process is not None]
    signalled = time.monotonic()
    for child in started:
        if child.poll() is None:
            child.terminate()
    for child in started:
        grace = signalled + child.stop_timeout_s - time.monotonic()
        with contextlib.suppress(TimeoutError):
            child.wait(max(0.0, grace))
        child.kill()
