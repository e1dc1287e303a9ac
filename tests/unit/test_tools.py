"""A missing system tool fails the test that needs it, saying which package to install."""

from __future__ import annotations

import os

import pytest

from tests.helpers.tools import require_tool


def test_a_missing_tool_fails_naming_its_package() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install gelombang-no-such-pkg"):
        require_tool("gelombang-no-such-tool", package="gelombang-no-such-pkg")


def test_an_installed_tool_is_found_by_its_full_path() -> None:
    path = require_tool("sh", package="dash")
    assert os.path.isabs(path) and os.access(path, os.X_OK)
