"""scripts/setup --if-needed (what scripts/demo runs) installs only when pyproject.toml or the
script changed; a plain scripts/setup (what scripts/test and CI run) always installs.

The project is copied to a temporary folder whose .venv/bin/python only records how it was
called, so no test touches the real .venv, pip or the network."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDING_PYTHON = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../../python-calls"
"""


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "setup", root / "scripts" / "setup")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("python", RECORDING_PYTHON), ("gelombang", "#!/bin/sh\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return root


def _setup(root: Path, *args: str) -> tuple[str, list[str]]:
    """Run scripts/setup; its output and every pip call it made."""
    done = subprocess.run(
        ["bash", "scripts/setup", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    calls = root / "python-calls"
    made = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return done.stdout, made


def test_the_install_is_skipped_until_pyproject_or_the_script_changes(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _, first = _setup(root, "--if-needed")
    assert first == ["-m pip install -q --upgrade pip", "-m pip install -q -e .[dev]"]
    output, second = _setup(root, "--if-needed")
    assert second == []
    assert "install skipped" in output
    with (root / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# a new dependency would go here\n")
    _, after_change = _setup(root, "--if-needed")
    assert after_change == first
    assert _setup(root, "--if-needed")[1] == []
    with (root / "scripts" / "setup").open("a") as script:
        script.write("\n# the set-up changed\n")
    assert _setup(root, "--if-needed")[1] == first


def test_a_plain_setup_always_installs_and_a_failed_install_is_redone(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _setup(root, "--if-needed")
    assert len(_setup(root)[1]) == 2  # what scripts/test and CI run
    # An install that failed half-way leaves no stamp: the next run installs again.
    python = root / ".venv" / "bin" / "python"
    python.write_text(RECORDING_PYTHON + "exit 1\n")
    failed = subprocess.run(["bash", "scripts/setup"], cwd=root, capture_output=True, timeout=60)
    assert failed.returncode != 0
    python.write_text(RECORDING_PYTHON)
    (root / "python-calls").unlink()
    assert len(_setup(root, "--if-needed")[1]) == 2


def test_the_demo_uses_if_needed_and_the_test_script_does_not() -> None:
    demo = (REPO / "scripts" / "demo").read_text()
    test = (REPO / "scripts" / "test").read_text()
    assert "scripts/setup --if-needed\n" in demo
    assert "scripts/setup --test\n" in test and "--if-needed" not in test
