"""Run `wrk` (optionally pinned to CPUs) and parse its report."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gelombang_harness import ChildProcess

LUA_DIR = Path(__file__).parent / "lua"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s+(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int
    """Non-2xx answers plus socket errors: a run with errors does not count as a result."""
    non_2xx: int = 0
    socket_errors: int = 0


def parse(output: str) -> WrkResult:
    rate = _RATE.search(output)
    total = _TOTAL.search(output)
    if rate is None or total is None:
        raise WrkError(f"unexpected wrk output:\n{output}")
    percentiles = {p: float(v) * _UNITS[u] for p, v, u in _PERCENTILE.findall(output)}
    non_2xx = sum(int(n) for n in _NON_2XX.findall(output))
    sockets = _SOCKET_ERRORS.search(output)
    socket_errors = sum(int(n) for n in sockets.groups()) if sockets else 0
    return WrkResult(
        requests_per_s=float(rate.group(1)),
        requests=int(total.group(1)),
        p50_ms=percentiles.get("50", float("nan")),
        p99_ms=percentiles.get("99", float("nan")),
        errors=non_2xx + socket_errors,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
    )


def run_wrk(
    url: str,
    *,
    duration_s: float,
    connections: int,
    threads: int = 1,
    script: str | None = None,
    script_args: Sequence[str] = (),
    cpus: str | None = None,
    delay_ms: int = 0,
    timeout_s: float = 5.0,
) -> WrkResult:
    """One wrk run; `cpus` pins it with taskset (e.g. "1"), apart from the server's core."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "--timeout",
        f"{max(1, round(timeout_s))}s",
    ]
    if script:
        command += ["-s", str(LUA_DIR / script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    env = {**os.environ, "BENCH_DELAY_MS": str(delay_ms)}
    with tempfile.TemporaryDirectory(prefix="gelombang-wrk-") as folder:
        report, errors = Path(folder) / "report.txt", Path(folder) / "errors.log"
        wrk = ChildProcess("wrk", command, log=errors, stdout=report, env=env)
        returncode = wrk.run(timeout_s=duration_s + 60)
        if returncode != 0:
            raise WrkError(f"wrk failed ({returncode}): {wrk.log_text().strip()}")
        return parse(report.read_text())
