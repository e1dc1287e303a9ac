"""The one process harness (`gelombang_harness`), on real child processes: its own
process group, readiness, bounded stop of the whole group, logs, exit codes and usage."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from gelombang_harness import (
    ChildFailed,
    ChildProcess,
    HttpReady,
    PortReady,
    stop_all,
)
from queue_service.redis_server import free_port

# Serves 200 on a port after a short start-up; says goodbye on SIGTERM and exits 0.
GRACEFUL_SERVER = """
import http.server, signal, sys, time
def bye(signum, frame):
    print("stopping gracefully", file=sys.stderr, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
time.sleep(0.3)
handler = http.server.SimpleHTTPRequestHandler
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), handler)
print("listening", file=sys.stderr, flush=True)
server.serve_forever()
"""
# Ignores SIGTERM, and so does the grandchild it starts in its group (a stuck worker).
STUBBORN_WITH_WORKER = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    "print('worker ignores SIGTERM', flush=True); time.sleep(600)"])
print(worker.pid, flush=True)
time.sleep(600)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(600)
"""


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def first_output(child: ChildProcess) -> str:
    """Wait until the child has printed something (its signal handlers are set by then)."""
    deadline = time.monotonic() + 10
    while not child.log_text().strip():
        assert time.monotonic() < deadline, f"{child.name} printed nothing"
        time.sleep(0.05)
    return child.log_text()


def gone(pid: int) -> bool:
    """Exited (a zombie whose parent died counts: it runs no code and holds no port)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_starts_in_its_own_group_waits_until_ready_and_stops_gracefully(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "server.log"
    with ChildProcess(
        "server", python(GRACEFUL_SERVER, str(port)), log=log, ready=HttpReady(url), cwd=tmp_path
    ) as server:
        assert HttpReady(url)()  # start() returned only once it answered
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)
        assert "listening" in server.log_text()
    assert not server.running
    assert server.returncode == 0  # it got SIGTERM and exited by itself, in time
    assert "stopping gracefully" in log.read_text()
    assert not PortReady(port)()


def test_a_child_ignoring_sigterm_is_killed_after_its_grace_with_its_whole_group(
    tmp_path: Path,
) -> None:
    child = ChildProcess(
        "stubborn", python(STUBBORN_WITH_WORKER), log=tmp_path / "log", stop_timeout_s=1.0
    ).spawn()
    deadline = time.monotonic() + 10
    while "worker ignores SIGTERM" not in first_output(child):
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)
    worker = next(int(word) for word in child.log_text().split() if word.isdigit())
    assert os.getpgid(worker) == child.pid

    started = time.monotonic()
    child.stop()
    took = time.monotonic() - started
    assert 1.0 <= took < 4.0, took  # the grace, then SIGKILL: bounded
    assert child.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while not gone(worker):  # the worker in the group went too
        assert time.monotonic() < deadline, "the worker outlived its group's stop"
        time.sleep(0.05)


def test_children_are_stopped_together_within_one_grace(tmp_path: Path) -> None:
    children = [
        ChildProcess(f"stubborn-{n}", python(STUBBORN), log=tmp_path / f"{n}.log", stop_timeout_s=1)
        for n in range(3)
    ]
    for child in children:
        child.spawn()
    for child in children:
        first_output(child)
    started = time.monotonic()
    stop_all(children)
    assert time.monotonic() - started < 2.5  # one grace for all, not one after another
    assert [child.returncode for child in children] == [-signal.SIGKILL] * 3


def test_a_child_exiting_before_it_is_ready_fails_with_its_log(tmp_path: Path) -> None:
    child = ChildProcess(
        "broken",
        python("import sys; print('bad config: no such wave', file=sys.stderr); sys.exit(3)"),
        log=tmp_path / "broken.log",
        ready=PortReady(free_port()),
    )
    with pytest.raises(ChildFailed, match="broken exited with 3") as failure:
        child.start()
    assert "bad config: no such wave" in str(failure.value)
    assert str(tmp_path / "broken.log") in str(failure.value)


def test_a_child_not_ready_in_time_fails_and_is_stopped(tmp_path: Path) -> None:
    port = free_port()
    child = ChildProcess(
        "silent",
        python("import time; time.sleep(600)"),
        log=tmp_path / "silent.log",
        ready=PortReady(port),
        ready_timeout_s=0.5,
    )
    with pytest.raises(ChildFailed, match=rf"not ready within 0\.5 s .*{port} accepting"):
        child.start()
    assert not child.running and child.returncode == -signal.SIGTERM


def test_leaving_the_context_on_an_error_stops_the_child(tmp_path: Path) -> None:
    child = ChildProcess("sleeper", python("import time; time.sleep(600)"), log=tmp_path / "log")
    with pytest.raises(ValueError), child:
        assert child.running
        raise ValueError("the test failed")
    assert not child.running and gone(child.pid)


def test_kill_is_a_crash_and_a_later_stop_is_harmless(tmp_path: Path) -> None:
    child = ChildProcess("sleeper", python("import time; time.sleep(600)"), log=tmp_path / "log")
    child.spawn()
    child.kill()
    assert child.returncode == -signal.SIGKILL
    child.stop()
    assert child.returncode == -signal.SIGKILL


def test_run_to_the_end_keeps_stdout_apart_and_reports_usage(tmp_path: Path) -> None:
    code = """
        import json, sys, time
        started = time.process_time()
        while time.process_time() - started < 0.3:
            pass
        print("working", file=sys.stderr)
        print(json.dumps({"answer": 42}))
        sys.exit(5)
    """
    child = ChildProcess(
        "job", python(code), log=tmp_path / "job.log", stdout=tmp_path / "job.json"
    )
    assert child.run(timeout_s=30) == 5
    assert json.loads((tmp_path / "job.json").read_text()) == {"answer": 42}
    assert child.log_text().strip() == "working"
    assert child.usage is not None
    assert child.usage.ru_utime + child.usage.ru_stime >= 0.25
    assert child.usage.ru_maxrss > 1000  # KiB: a Python interpreter's peak memory


def test_run_stops_a_child_that_overruns(tmp_path: Path) -> None:
    child = ChildProcess("stuck", python("import time; time.sleep(600)"), log=tmp_path / "log")
    with pytest.raises(TimeoutError, match=r"stuck still running after 0\.5 s"):
        child.run(timeout_s=0.5)
    assert not child.running
