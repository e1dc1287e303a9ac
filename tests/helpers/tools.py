"""The system tools some tests drive (Chromium, Prometheus, promtool, wrk, redis-server): a
test that needs a missing one fails, naming the package to install, instead of skipping
silently. `scripts/setup --test` (run by `scripts/test`) installs every one of them."""

from __future__ import annotations

import shutil

import pytest


def require_tool(command: str, *, package: str) -> str:
    """The full path of `command`; fails the calling test if it is not installed."""
    path = shutil.which(command)
    if path is None:
        pytest.fail(
            f"{command} is not installed; this test needs it: apt-get install {package} "
            "(scripts/setup --test installs it)",
            pytrace=False,
        )
    return path
