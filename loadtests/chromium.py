"""How Gelombang runs Debian's Chromium headless (tests and benchmarks): its flags, in one
place. Playwright drives it through `executable_path`; no browser is ever downloaded."""

from __future__ import annotations

import shutil

# Headless, and nothing of Chromium's own traffic: the machine's network is closed, and
# without these Chromium keeps opening connections that are refused.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return shutil.which("chromium")
