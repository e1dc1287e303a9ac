"""Child processes started by the CLI, the demo, benchmarks and tests: wait until one answers
on HTTP, and stop its whole process group (a supervisor and its workers) reliably."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], *, name: str, timeout_s: float = 20.0
) -> None:
    """Poll `url` until it answers 200; fail early if the process exits, or after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} was not ready at {url} within {timeout_s:.0f} s")


def stop_process_group(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM the group (graceful), SIGKILL it if it lingers. The process must have been
    started with start_new_session=True."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            pass
    kill_process_group(process)


def kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole group, like a crashed host."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
