"""Every command fails fast and clean: a taken port or any configuration error exits non-zero
within a second or so, with one line naming the file, line, wave, variable or flag at fault,
before anything (an embedded Redis, a worker) is started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHECK_S = 1.0
"""What a failing check may add to the command's bare start-up (measured about 0.05 s here):
enough for any check, far from the seconds of a Redis connection or a worker start."""

WAVE = """
[[waves]]
id = "w1"
opens_at = 1900000000
closes_at = {closes}
admit_rate = {rate}
origin_url = "http://127.0.0.1:9/"
"""

CASES: list[tuple[str, str, dict[str, str], list[str], str]] = [
    ("broken toml", '[service]\nport = "x\n', {}, [], "line 2"),
    ("unknown setting", "[service]\nportt = 1\n", {}, [], "[service].portt"),
    ("closes before opens", WAVE.format(closes=1800000000, rate=1), {}, [], "wave 'w1'"),
    ("negative rate", WAVE.format(closes=2000000000, rate=-1), {}, [], "admit_rate"),
    ("port from the environment", "", {"GELOMBANG_PORT": "abc"}, [], "GELOMBANG_PORT"),
    ("port out of range", "", {}, ["--port", "99999"], "--port"),
    ("bad trusted proxy", "", {"GELOMBANG_TRUSTED_PROXIES": "nope"}, [], "TRUSTED_PROXIES"),
    ("connection bound neither auto nor a number", "", {}, ["--max-connections", "many"],
     "--max-connections"),
    ("in-flight bound from the file", "[service]\nmax_inflight = -1\n", {}, [],
     "[service].max_inflight"),
    ("target delay in milliseconds", "", {"GELOMBANG_TARGET_QUEUE_DELAY_S": "50"}, [],
     "GELOMBANG_TARGET_QUEUE_DELAY_S"),
]  # fmt: skip


def timed(
    command: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "gelombang.cli", *command],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    return result, time.monotonic() - started


def limit_s() -> float:
    """Twice what the commands must import anyway (the service, the sample origin), timed just
    now as loaded as the machine is (the load moves between two runs: seen 1.5 s then 2.1 s),
    plus what a check may add: a fixed limit fails on a busy CI machine where Python alone
    takes seconds to start."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import queue_service.app, gelombang.cli, simulator.origin"],
        check=True,
        timeout=30,
    )
    return 2 * (time.monotonic() - started) + CHECK_S


def assert_fast(elapsed: float, limit_before: float) -> None:
    """Within the limit timed before the command, or the one timed again after it: the load
    moves within seconds (seen: 3.98 s against a limit of 3.68 s timed just before)."""
    if elapsed >= limit_before:
        limit_after = limit_s()
        assert elapsed < limit_after, (elapsed, limit_before, limit_after)


def serve(
    args: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    return timed(["serve", *args], cwd, env)


@pytest.mark.parametrize(("name", "config", "env", "flags", "names"), CASES)
def test_a_configuration_error_is_one_line_and_starts_nothing(
    tmp_path: Path, name: str, config: str, env: dict[str, str], flags: list[str], names: str
) -> None:
    args = [*flags, "--state-dir", str(tmp_path / "state")]
    if config:
        path = tmp_path / "gelombang.toml"
        path.write_text(config)
        args += ["--config", str(path)]
    limit = limit_s()
    result, elapsed = serve(args, env, tmp_path)
    assert result.returncode == 2, (name, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gelombang serve: error: "), result.stderr
    assert names in lines[0], (name, lines[0])
    if config:
        assert str(tmp_path / "gelombang.toml") in lines[0]
    assert_fast(elapsed, limit)
    assert not (tmp_path / "state").exists(), "something was started before the check"


def test_a_taken_port_is_one_line_and_starts_no_redis(tmp_path: Path) -> None:
    limit = limit_s()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result, elapsed = serve(
            ["--port", str(port), "--state-dir", str(tmp_path / "state")], {}, tmp_path
        )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines() == [result.stderr.strip()]
        and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    )
    assert_fast(elapsed, limit)
    assert not (tmp_path / "state" / "redis").exists(), "the embedded Redis was started"


def test_the_origin_fails_fast_on_a_taken_port(tmp_path: Path) -> None:
    limit = limit_s()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result, elapsed = timed(["origin", "--unprotected", "--port", str(port)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert_fast(elapsed, limit)
