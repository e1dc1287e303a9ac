"""The quick tier stays quick: a quick test cannot start a process (the session's Redis
excepted), and everything under tests/e2e/ is in the slow tier."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.paths import REPO
from tests.helpers.tiers import ProcessInQuickTest, forbid_processes


def test_a_quick_test_that_starts_a_process_fails_naming_the_rule() -> None:
    # this test is quick, so the guard is already on
    with pytest.raises(ProcessInQuickTest, match=r"starts a process \(true\).*tests/e2e/"):
        subprocess.run(["true"], check=False)
    with forbid_processes("nested"), pytest.raises(ProcessInQuickTest):
        subprocess.Popen("true", shell=True)


@pytest.mark.slow  # starts a process: allowed, because it says so
def test_a_slow_test_may_start_processes() -> None:
    assert subprocess.run(["true"], check=False).returncode == 0


def test_every_end_to_end_test_is_in_the_slow_tier(request: pytest.FixtureRequest) -> None:
    e2e = REPO / "tests" / "e2e"
    items = [i for i in request.session.items if i.path.is_relative_to(e2e)]
    if not items:
        pytest.skip("only part of the suite was collected")
    assert all(item.get_closest_marker("slow") for item in items)
