"""The two tiers of the suite, kept honest.

- **quick** (`scripts/test --quick`, `pytest -m "not slow"`): in-process tests, against the
  session's one `redis-server` at most. What a contributor runs while working.
- **slow**: everything that starts a process of its own (the service, the origin, Chromium,
  Locust, Prometheus, promtool, nginx, a Redis Cluster, a CLI command) or runs for more than a
  few seconds. Everything in `tests/e2e/` is slow; a test elsewhere says so with
  `@pytest.mark.slow`.

A quick test that starts a process fails at once, naming the rule (`forbid_processes`), and
one that ran for longer than `QUICK_TEST_LIMIT_S` fails when it ends: the quick tier stays
quick because a test that is not cannot hide in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from typing import Any

QUICK_TEST_LIMIT_S = 60.0
"""A quick test's longest run (setup, call and teardown) before it fails as misfiled: far above
what a quick test takes (well under a second, the longest 3-4 s), so neither a slow day nor a
machine shared with other work trips it (seen: a 3.4 s test took 16 s with the load at 4 on
2 cores); tests over QUICK_TEST_WARN_S are listed at the end of every run."""
QUICK_TEST_WARN_S = 3.0
"""Listed at the end of a run: quick tests getting close to needing the mark."""
ALLOWED_IN_QUICK = frozenset({"redis-server"})
"""The session's Redis (tests/conftest.py) is the one process the quick tier may start."""


class ProcessInQuickTest(AssertionError):
    pass


@contextlib.contextmanager
def forbid_processes(test: str) -> Iterator[None]:
    """Within the block, starting any process but the session's Redis raises."""
    original = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> Any:
        argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
        program = os.path.basename(os.fsdecode(argv[0])) if argv else ""
        if program not in ALLOWED_IN_QUICK:
            raise ProcessInQuickTest(
                f"{test} starts a process ({program}): move it to tests/e2e/ or mark it "
                "@pytest.mark.slow (tests/helpers/tiers.py)"
            )
        return original(self, args, *rest, **kwargs)

    subprocess.Popen._execute_child = refuse  # type: ignore[attr-defined]
    try:
        yield
    finally:
        subprocess.Popen._execute_child = original  # type: ignore[attr-defined]


# -- tests that measure time need the machine to themselves -------------------------------------

EXCLUSIVE_DOC = (
    "exclusive: measures latency or throughput, so it runs alone even when the suite runs in "
    "parallel (pytest-xdist): it waits for the tests running on other workers to end, and "
    "they wait for it (tests/helpers/tiers.py)"
)


class MachineLock:
    """A readers-writer lock across pytest-xdist workers, on two lock files: every test holds
    it shared while it runs; a test marked `exclusive` holds it alone. The gate keeps new tests
    from starting while an exclusive one waits, so it is not starved by a stream of short ones.
    Outside pytest-xdist (one process) it does nothing."""

    def __init__(self, directory: str | None) -> None:
        self._files: tuple[int, int] | None = None
        if directory is not None:
            gate = os.open(os.path.join(directory, "gate.lock"), os.O_CREAT | os.O_RDWR, 0o600)
            machine = os.open(
                os.path.join(directory, "machine.lock"), os.O_CREAT | os.O_RDWR, 0o600
            )
            self._files = (gate, machine)

    @contextlib.contextmanager
    def held(self, *, exclusive: bool) -> Iterator[None]:
        if self._files is None:
            yield
            return
        gate, machine = self._files
        if exclusive:
            fcntl.flock(gate, fcntl.LOCK_EX)  # no new test starts from here on
            fcntl.flock(machine, fcntl.LOCK_EX)  # and those running have ended
            try:
                yield
            finally:
                fcntl.flock(machine, fcntl.LOCK_UN)
                fcntl.flock(gate, fcntl.LOCK_UN)
            return
        fcntl.flock(gate, fcntl.LOCK_SH)
        fcntl.flock(machine, fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(machine, fcntl.LOCK_UN)
