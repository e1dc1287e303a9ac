"""The service's layers hold (docs/architecture.md, "Module map"): `queue_service/` imports
nothing of the simulator, the command line or the harness; only the process's assembly
(`app.py`, `commands/`) and the HTTP layer itself import `queue_service.http`; and the origin's
library answers at the path the README first gave."""

from __future__ import annotations

import ast
from pathlib import Path

import gelombang_origin
import queue_service.origin_guard
from tests.helpers.paths import REPO

SERVICE = REPO / "queue_service"
OUTSIDE = ("simulator", "loadtests", "gelombang", "gelombang_harness", "tests")
COMPAT = SERVICE / "origin_guard.py"
"""The one module that imports from outside the folder: the origin library's old path."""


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def service_modules() -> list[Path]:
    return sorted(SERVICE.rglob("*.py"))


def test_the_service_imports_nothing_that_stands_beside_or_above_it() -> None:
    wrong = {
        f"{path.relative_to(REPO)}: {name}"
        for path in service_modules()
        if path != COMPAT
        for name in imported(path)
        if name.split(".")[0] in (*OUTSIDE, "gelombang_origin")
    }
    assert not wrong, sorted(wrong)


def test_only_the_assembly_and_the_http_layer_import_the_http_layer() -> None:
    allowed = (SERVICE / "http", SERVICE / "commands")
    wrong = {
        f"{path.relative_to(REPO)}: {name}"
        for path in service_modules()
        if path != SERVICE / "app.py" and not path.is_relative_to(allowed[0])
        and not path.is_relative_to(allowed[1])
        for name in imported(path)
        if name == "queue_service.http" or name.startswith("queue_service.http.")
    }  # fmt: skip
    assert not wrong, sorted(wrong)


def test_the_origin_library_answers_at_its_old_path_too() -> None:
    for name in queue_service.origin_guard.__all__:
        assert getattr(queue_service.origin_guard, name) is getattr(gelombang_origin, name)
    assert "admission_middleware" in queue_service.origin_guard.__all__
