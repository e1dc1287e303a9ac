"""Every repository path the documentation names (a test file, a script, a document, a config)
exists: a moved file cannot leave a reader at a dead end."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers.paths import REPO

NAMED_PATH = re.compile(
    r"(?<![\w/.$-])((?:tests|docs|scripts|deploy|dashboards|loadtests|simulator|queue_service)"
    r"/[\w./*{}-]*[\w*])"
)
DOCUMENTS = ["README.md", "docs/*.md", "loadtests/*.md", "dashboards/*.md"]
MADE_BY_THE_READER = frozenset({"deploy/gelombang.env", "deploy/secrets/signing.pem"})
"""Files the documents tell the reader to create (git-ignored: secrets)."""
HISTORY = "then; since"
"""A line that names a file as it was (a benchmark's history) says so."""


def named_paths(text: str) -> set[str]:
    return {m.group(1) for m in NAMED_PATH.finditer(text) if "{" not in m.group(1)}


def exists(path: str, document: Path) -> bool:
    if path in MADE_BY_THE_READER:
        return True
    for base in (REPO, document.parent):  # from the repository's root, or the document's folder
        if "*" in path:
            if any(base.glob(path)):
                return True
        elif (base / path).exists():
            return True
    return False


def test_every_path_a_document_names_exists() -> None:
    documents: list[Path] = [p for pattern in DOCUMENTS for p in REPO.glob(pattern)]
    assert len(documents) >= 8
    dead = sorted(
        f"{document.relative_to(REPO)}: {path}"
        for document in documents
        for line in document.read_text(encoding="utf-8").splitlines()
        if HISTORY not in line
        for path in named_paths(line)
        if not exists(path, document)
    )
    assert not dead, "\n".join(dead)


RUN_FROM_THE_CLONE = {
    "README.md": ("## A five-minute tour", "## How it works"),
    "docs/loadtesting.md": ("", ""),
    "docs/demo.md": ("", ""),
}
"""Documents (or the part between two headings) whose commands are run in a clone after
scripts/setup: the tools are in .venv/bin (nothing is installed on PATH, no environment is
activated). The deployment sections speak of an installed `gelombang`."""
BARE_TOOL = re.compile(r"^(?:[A-Z_]+=\S+ )*(gelombang|locust|python|pytest|ruff|mypy) ", re.M)


def test_commands_for_a_fresh_clone_name_the_virtual_environments_tools() -> None:
    for name, (start, end) in RUN_FROM_THE_CLONE.items():
        text = (REPO / name).read_text("utf-8")
        if start:
            text = text[text.index(start) : text.index(end)]
        for block in re.findall(r"```sh\n(.*?)```", text, re.S):
            bare = BARE_TOOL.findall(block)
            assert not bare, f"{name}: {bare} without .venv/bin/ in\n{block}"
