"""How long an admitted registrant holds the origin: time on the forms plus the origin's work.

One definition for the live driver and the offline model. A session is the registrant's own
time (reading, typing, waiting for the SMS: `think_time_s`, lognormal per flow from the
scenario's `[origin]` table) spread over the registration steps, plus the origin's service
time of each request (`[origin.service_ms]`; the sample origin draws it lognormally around
the median). The driver sleeps the think time between requests; the model adds the expected
service time to it (`flow_service_s`), so both hold a `max_active` slot for the same time.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from simulator.flow import OVERSIZED_PHOTO_SHARE, STEPS
from simulator.origin.config import OriginConfig

if TYPE_CHECKING:
    from simulator.scenario import OriginParams

ORIGIN_SERVICE_SIGMA = OriginConfig().service_sigma


def think_time_s(rng: random.Random, origin: OriginParams) -> float:
    """The registrant's own time through the whole flow (new account or returning)."""
    new = rng.random() < origin.new_account_share
    median = origin.session_new_median_s if new else origin.session_returning_median_s
    return median * math.exp(origin.session_sigma * rng.gauss(0.0, 1.0))


def mean_think_time_s(origin: OriginParams) -> float:
    spread = math.exp(origin.session_sigma**2 / 2.0)  # a lognormal's mean over its median
    return spread * (
        origin.new_account_share * origin.session_new_median_s
        + (1.0 - origin.new_account_share) * origin.session_returning_median_s
    )


def flow_service_s(origin: OriginParams) -> float:
    """Expected origin service time of one whole flow at low load, seconds: every step once,
    the KTP upload twice for the share whose photo is too large the first time."""
    spread = math.exp(ORIGIN_SERVICE_SIGMA**2 / 2.0)
    steps = {step.name for step in STEPS}
    total = sum(ms for name, ms in origin.service_ms.items() if name in steps)
    total += OVERSIZED_PHOTO_SHARE * origin.service_ms.get("ktp", 0.0)
    return spread * total / 1000.0


def mean_session_s(origin: OriginParams) -> float:
    """Expected time from taking up an admission to the end of the flow."""
    return mean_think_time_s(origin) + flow_service_s(origin)


def requests_in_flight_share(origin: OriginParams) -> float:
    """The share of a session during which one of its requests is at the origin: turns
    sessions in progress into the origin's own unit, concurrent requests."""
    return flow_service_s(origin) / mean_session_s(origin)
