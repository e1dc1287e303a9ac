"""The `backend` fixture: each admission guarantee's one test body runs on the queue service
over a real Redis and on the offline model's queue (tests/helpers/backends.py)."""

from __future__ import annotations

import pytest

from queue_service.clock import ManualClock
from tests.helpers.backends import AdmissionBackend, ModelBackend, RedisBackend
from tests.helpers.support import T0


@pytest.fixture(params=["redis", "model"])
def backend(request: pytest.FixtureRequest) -> AdmissionBackend:
    if request.param == "redis":
        return RedisBackend(request.getfixturevalue("client"), request.getfixturevalue("clock"))
    return ModelBackend(ManualClock(T0))
