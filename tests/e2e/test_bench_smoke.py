"""Smoke run of the benchmark scripts (loadtests/bench), tiny and short, so they cannot rot.

Runs every benchmark end to end (real redis-server, `gelombang serve`, wrk, the simulator's
driver and model) and checks only that each produced a well-formed result table: performance
is not asserted here (2 shared cores are too noisy; figures live in loadtests/RESULTS.md)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from gelombang_harness import ChildProcess, HttpReady
from queue_service.redis_server import free_port
from tests.helpers.paths import REPO
from tests.helpers.tools import require_tool

EXPECTED_ROWS = {
    "throughput": ["bare aiohttp hello", "status poll (", "join (unique registrants)"],
    "latency": ["status p99 at half saturation"],
    "workers": ["status, --workers 1", "status, --workers 2"],
    "scale": ["status poll, 200 waiting", "status poll, 400 waiting", "memory for 10 M waiting"],
    "admission": ["admission, 2 processes"],
    "driver": ["driver: peak concurrent registrants"],
    "model": ["offline model, prakerja, 20,000 registrants"],
    "overload": ["overload: status, 300 connections"],
    "ceiling": [
        "Redis ceiling: join, 32 per call",
        "Redis ceiling: status (Redis path), 32 per call",
        "Redis ceiling: seen flush, 500 per call",
        "Redis ceiling: admission step, 1 per call",
    ],
    "cluster": ["cluster: joins over 3 waves on 3 masters"],
    "idle": ["idle: 20 waves open, nobody waiting", "idle: 20 waves closed"],
    "reclaim": ["reclaim: Redis bytes per finished ticket", "reclaim: queue process RSS"],
    "verify": [
        "verify: status poll, same run",
        "verify: auth_request check",
        "verify: first checks included",
    ],
}
MAY_MEASURE_NOTHING = ("idle: ", "reclaim: ")
"""Rows whose figure may be 0 in a tiny run (CPU time is counted in 10 ms ticks; nothing may be
left behind)."""
TINY = [
    "--duration=1",
    "--runs=1",
    "--connections=8",
    "--tickets=300",
    "--sample=100",
    "--sizes=200,400",
    "--admission-seconds=2",
    "--admission-rate=50",
    "--admission-workers=2",
    "--driver-registrants=300",
    "--model-population=20000",
    "--flood-connections=300",
    "--idle-waves=20",
    "--reclaim-tickets=200",
    "--reclaim-rounds=2",
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_every_benchmark_runs_end_to_end_and_prints_a_result_table(tmp_path: Path) -> None:
    require_tool("wrk", package="wrk")
    require_tool("redis-cli", package="redis-tools")  # the cluster benchmark
    out = tmp_path / "rows.json"
    bench = ChildProcess(
        "bench",
        [sys.executable, "-m", "loadtests.bench", *TINY, f"--json={out}"],
        log=tmp_path / "bench.log",
        stdout=tmp_path / "bench.out",
        cwd=REPO,
    )
    returncode = bench.run(timeout_s=220)
    # 0 = every target met, 1 = one missed (expected at this size); 2 = a benchmark broke
    assert returncode in (0, 1), bench.log_tail()
    stdout = (tmp_path / "bench.out").read_text()
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("| benchmark"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:4] == ["benchmark", "median", "unit", "runs"]
    assert columns[-2:] == ["target", "met"]

    rows = json.loads(out.read_text())
    names = [row["benchmark"] for row in rows]
    for benchmark, expected in EXPECTED_ROWS.items():
        for prefix in expected:
            assert any(name.startswith(prefix) for name in names), (benchmark, prefix, names)
            assert any(line.startswith(f"| {prefix}") for line in lines), (prefix, stdout)
    for row in rows:
        least = 0 if row["benchmark"].startswith(MAY_MEASURE_NOTHING) else 1e-12
        assert row["runs"] and all(math.isfinite(r) and r >= least for r in row["runs"]), row
        assert row["met"] in (True, False, None), row
    targets = {row["benchmark"]: row for row in rows if row["met"] is not None}
    assert len(targets) >= 9, targets  # every target of loadtests/RESULTS.md has a row
    exit_code = 1 if any(row["met"] is False for row in rows) else 0
    assert returncode == exit_code


def test_the_peer_comparison_runs_against_a_server_of_ours_standing_in_for_the_peer(
    tmp_path: Path,
) -> None:
    """`peer` needs a waiting room outside the repository; here the bare hello server stands in
    (it answers any cookie), so the comparison's plumbing (pinning, interleaved runs, CPU per
    request of the peer's process, the ratio rows) is exercised in every run."""
    require_tool("wrk", package="wrk")
    port = free_port()
    with ChildProcess(
        "hello",
        [sys.executable, "-m", "loadtests.bench.hello", str(port)],
        log=tmp_path / "hello.log",
        ready=HttpReady(f"http://127.0.0.1:{port}/readyz"),
        cwd=REPO,
    ) as hello:
        out = tmp_path / "rows.json"
        peer = [
            f"--peer-url=http://127.0.0.1:{port}",
            f"--peer-pid={hello.pid}",
            "--peer-status-path=/hello",
        ]
        bench = ChildProcess(
            "bench",
            [sys.executable, "-m", "loadtests.bench", "peer", *TINY, f"--json={out}", *peer],
            log=tmp_path / "bench.log",
            stdout=tmp_path / "bench.out",
            cwd=REPO,
        )
        returncode = bench.run(timeout_s=120)
    assert returncode in (0, 1), bench.log_tail()
    rows = {row["benchmark"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"vs peer: status", "vs peer: join"}, rows
    for row in rows.values():
        extra = row["extra"]
        assert extra["ours_per_s"] > 0 and extra["peer_per_s"] > 0 and extra["peer_cpu_us"] > 0
        assert row["runs"][0] == pytest.approx(extra["ours_per_s"] / extra["peer_per_s"])
