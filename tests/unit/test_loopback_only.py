"""Load, soak and fault traffic goes to this machine only: the live driver refuses any target
that is not loopback, and Locust any that is not unless it is named on purpose."""

from __future__ import annotations

import pytest

from loadtests.targets import TargetRefused, check_target
from simulator.driver import DriverConfig, NotLoopback


def test_non_loopback_targets_are_refused() -> None:
    for url in ("http://10.0.0.1:8080", "http://example.com", "http://192.168.1.2"):
        with pytest.raises(NotLoopback):
            DriverConfig(mode="direct", origin_url=url)
    with pytest.raises(NotLoopback):
        DriverConfig(mode="queued", origin_url="http://[::1]:9", queue_url="http://8.8.8.8")
    assert DriverConfig(mode="direct", origin_url="http://localhost:9").origin_url


def test_targets_are_loopback_unless_named() -> None:
    with pytest.raises(TargetRefused):
        check_target("http://10.1.2.3:8080", explicit=False, what="queue host")
    with pytest.raises(TargetRefused):
        check_target("ftp://127.0.0.1/", explicit=True, what="origin URL")
    assert check_target("http://10.1.2.3:8080/", explicit=True, what="queue host") == (
        "http://10.1.2.3:8080"
    )
    assert check_target("http://localhost:8080", explicit=False, what="queue host")
    assert check_target("http://[::1]:8080", explicit=False, what="queue host")
