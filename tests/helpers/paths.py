"""Where things are, for tests in any folder of `tests/`."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository's root (the project's files are read from here, never from outside it)."""
TEST_SCENARIOS = Path(__file__).resolve().parent / "scenarios"
"""Scenario files written for the tests."""
