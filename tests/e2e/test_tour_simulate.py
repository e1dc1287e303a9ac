"""The README's "Run a wave yourself" tour, end to end on loopback: `gelombang serve` (embedded
Redis, per-address limits on, loopback trusted as the proxy), `gelombang origin --wave demo`,
`gelombang wave put demo ...`, then `gelombang simulate --wave demo --recreate`: the wave that
opened a minute ago is created anew to open 10 s into the run, with a pre-queue (a wave opens
once: without --recreate the command stops and says so), every setting it changes is printed,
registrations complete and the pre-queue figures are measured.
And what the simulator says when the set-up cannot work: an origin guarding another wave
(exit 2, before any traffic), a queue that does not believe the registrants' addresses (a
warning, and exit 1 when nobody completed, with the reasons)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.records import RunRecord
from tests.helpers.paths import REPO
from tests.helpers.processes import GelombangProcess, ServeProcess
from tests.helpers.support import ADMIN_TOKEN

TOUR_SECONDS = 25.0

pytestmark = pytest.mark.timeout(150)


def tour_commands() -> list[str]:
    """The tour's shell lines, as the README writes them (continuations joined)."""
    text = (REPO / "README.md").read_text("utf-8")
    section = text[text.index("### 2. Run a wave yourself") : text.index("### 3. Watch it")]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line.strip() for line in "\n".join(blocks).replace("\\\n", " ").splitlines()]


def gelombang(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gelombang.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})},
    )  # fmt: skip


def origin_for(queue_url: str, wave: str, log: Path) -> GelombangProcess:
    return GelombangProcess(
        ["origin", "--wave", wave, "--jwks-url", f"{queue_url}/.well-known/jwks.json"],
        log, ready_path="/healthz",
    )  # fmt: skip


def test_the_readme_tour_uses_these_commands() -> None:
    lines = " ".join(tour_commands())
    assert "GELOMBANG_TRUSTED_PROXIES=127.0.0.1/32 .venv/bin/gelombang serve --port 8080" in lines
    assert ".venv/bin/gelombang origin --port 9000 --wave demo" in lines
    assert "wave put demo" in lines and "origin_url=http://127.0.0.1:9000/" in lines
    assert "--set id_kind=nik" in lines  # the example joins a NIK: one NIK, one place
    assert (
        ".venv/bin/gelombang simulate --scenario laptop --wave demo --recreate --mode queued"
        in re.sub(r"\s+", " ", lines)
    )
    assert "-c jar " not in lines  # the tour leaves no cookie file in the repository


def test_the_tour_completes_registrations(tmp_path: Path) -> None:
    serve = ServeProcess(
        "",
        tmp_path,
        env={"GELOMBANG_RATE_LIMITS": "on", "GELOMBANG_TRUSTED_PROXIES": "127.0.0.1/32"},
    )
    with serve, origin_for(serve.url, "demo", tmp_path / "origin.log") as origin:
        now = int(time.time())
        put = gelombang(
            "wave", "--url", serve.url, "put", "demo",
            "--set", f"opens_at={now - 60}", "--set", f"closes_at={now + 3600}",
            "--set", "admit_rate=5", "--set", "max_active=50", "--set", "id_kind=nik",
            "--set", f"origin_url={origin.url}/",
        )  # fmt: skip
        assert put.returncode == 0, put.stderr
        args = ("simulate", "--scenario", "laptop", "--wave", "demo", "--mode", "queued",
                "--queue-url", serve.url, "--origin-url", origin.url,
                "--max-seconds", str(TOUR_SECONDS), "--quiet")  # fmt: skip
        refused = gelombang(*args)  # demo opened a minute ago: it cannot open again
        assert refused.returncode == 2, refused.stderr
        assert "wave demo opened at " in refused.stderr and "--recreate" in refused.stderr
        run = gelombang(*args, "--recreate", "--out", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "warning" not in run.stderr, run.stderr
    said = " ".join(run.stderr.split())
    assert "deleted wave demo (nobody in it) to create it anew" in said
    assert (
        "the run re-creates wave demo from scenario 'laptop': it opens 10 s after the run starts "
        "(pre-queue from 10 s before that) and closes 100 s after it"
    ) in said
    assert "changes: admit_rate 5 -> 20, admit_burst 5 -> 20, max_active 50 -> 40" in said
    completed = int(re.search(r"registrations completed\s+(\d+)", run.stdout).group(1))  # type: ignore[union-attr]
    assert completed >= 50, run.stdout
    # a real opening: people joined a pre-queue, and once its members were admitted the
    # pre-queue figures are measured, not "–" (they were, when the wave had already opened)
    record = RunRecord.load(tmp_path / "out" / "run-queued.json")
    assert record.totals.prequeue > 0
    block_admitted = [o for o in record.registrants if o.prequeue and o.admitted_t is not None]
    row = next(
        line
        for line in run.stdout.splitlines()
        if line.startswith("pre-queue admitted before later arrivals")
    )
    assert row.rstrip().endswith("yes") if block_admitted else True, row


def test_a_set_up_that_cannot_work_is_named(tmp_path: Path) -> None:
    # no trusted proxy: every registrant looks like 127.0.0.1 to the per-address limits
    serve = ServeProcess("", tmp_path, env={"GELOMBANG_RATE_LIMITS": "on"})
    with serve, origin_for(serve.url, "other", tmp_path / "origin.log") as origin:
        args = ("simulate", "--scenario", "laptop", "--wave", "demo", "--mode", "queued",
                "--queue-url", serve.url, "--origin-url", origin.url, "--quiet")  # fmt: skip
        wrong_wave = gelombang(*args, "--max-seconds", "5")
        assert wrong_wave.returncode == 2
        assert "protects wave 'other', not 'demo'" in wrong_wave.stderr
        with origin_for(serve.url, "demo", tmp_path / "origin-demo.log") as right:
            crowd = gelombang(
                *args[:-3], "--origin-url", right.url, "--quiet", "--max-seconds", "4",
                "--max-registrants", "30",
            )  # fmt: skip
    assert "does not believe the registrants' own addresses" in crowd.stderr, crowd.stderr
    # 4 s end before the laptop wave opens (10 s): nothing completed, and it says why
    assert crowd.returncode == 1, crowd.stderr
    assert "completed no registration" in crowd.stderr
