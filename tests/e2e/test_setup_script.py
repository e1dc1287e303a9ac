"""`scripts/setup` installs exactly what uv.lock pins, and the installed .venv matches it.

The set-up script runs in a copy of the project whose `.venv/bin/python` and `.venv/bin/uv`
only record how they were called, so these tests touch neither the real .venv nor the network;
the real .venv is then checked against the lock with uv itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.helpers.paths import REPO

RECORDER = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "uv {version}"; exit 0; fi
echo "$(basename "$0") $*" >> "$(dirname "$0")/../../calls"
for arg in "$@"; do
  case "$arg" in *.txt|/tmp/*) [ -f "$arg" ] && cat "$arg" >> "$(dirname "$0")/../../calls" ;; esac
done
exit {code}
"""


def locked_uv() -> dict[str, object]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    uv: dict[str, object] = next(p for p in lock["package"] if p["name"] == "uv")
    return uv


def _project(tmp_path: Path, *, uv_version: str, uv_exit: int = 0) -> Path:
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    for name in ("scripts/setup", "pyproject.toml", "uv.lock"):
        shutil.copy2(REPO / name, root / name)
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, code in (("python", 0), ("uv", uv_exit)):
        (bin_dir / name).write_text(RECORDER.format(version=uv_version, code=code))
        (bin_dir / name).chmod(0o755)
    return root


def _setup(root: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    done = subprocess.run(
        ["bash", "scripts/setup"], cwd=root, capture_output=True, text=True, timeout=60
    )
    calls = root / "calls"
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_setup_installs_exactly_the_lock_with_the_uv_it_pins(tmp_path: Path) -> None:
    version = str(locked_uv()["version"])
    done, calls = _setup(_project(tmp_path, uv_version=version))
    assert done.returncode == 0, done.stderr
    # the right uv is there: nothing but a frozen sync, which never re-resolves
    assert calls == ["uv sync --frozen --python .venv/bin/python"]
    assert "matches uv.lock" in done.stdout


def test_a_different_uv_is_replaced_by_the_locked_one_checked_by_hash(tmp_path: Path) -> None:
    uv = locked_uv()
    done, calls = _setup(_project(tmp_path, uv_version="0.0.1"))
    assert done.returncode == 0, done.stderr
    install = next(c for c in calls if c.startswith("python -m pip install"))
    assert "--require-hashes" in install and "--no-deps" in install
    requirement = next(c for c in calls if c.startswith("uv=="))
    hashes = {w["hash"] for w in uv["wheels"]}  # type: ignore[attr-defined]
    assert requirement.split()[0] == f"uv=={uv['version']}"
    assert {h.removeprefix("--hash=") for h in requirement.split()[1:]} == hashes
    assert calls[-1] == "uv sync --frozen --python .venv/bin/python"


def test_a_failed_install_says_so_and_shows_what_the_tool_printed(tmp_path: Path) -> None:
    version = str(locked_uv()["version"])
    done, _ = _setup(_project(tmp_path, uv_version=version, uv_exit=1))
    assert done.returncode != 0
    assert "failed: .venv/bin/uv sync --frozen" in done.stderr


def test_the_installed_environment_matches_the_lock_and_the_lock_matches_pyproject() -> None:
    uv = Path(sys.executable).parent / "uv"
    synced = subprocess.run(
        [str(uv), "sync", "--frozen", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "Would make no changes" in synced.stdout + synced.stderr
    locked = subprocess.run(
        [str(uv), "lock", "--check", "--offline"], cwd=REPO, capture_output=True, text=True
    )
    assert locked.returncode == 0, locked.stdout + locked.stderr


def test_the_scripts_set_up_then_run_and_ci_runs_the_test_script() -> None:
    demo = (REPO / "scripts" / "demo").read_text()
    test = (REPO / "scripts" / "test").read_text()
    assert "\nscripts/setup\n" in demo
    assert "\nscripts/setup --test\n" in test
    assert (REPO / ".ci" / "run").read_text().rstrip().endswith("exec scripts/test")
