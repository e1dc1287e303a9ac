"""The live driver: synthetic registrants arriving at a real queue and a real origin.

- `direct` mode: each registrant goes straight to the origin and runs the registration flow,
  retrying errors the way people do.
- `queued` mode: join the wave, poll status as told (manual refreshers and bots their own way;
  Retry-After honoured by humans only), balk or renege by patience (silently or with
  `leave`), and when admitted run the flow with the admission token, then `complete`.

Every decision is the registrant's journey (`simulator.journey`); the driver executes it.

- `config`: `DriverConfig` (targets on loopback only, bounds), synthetic client addresses;
- `runner`: `LiveRun` and `run_live`: arrivals, one task per registrant, the run record;
- `registrant`: `LiveRegistrant`, one journey over aiohttp, recorded;
- `samplers`: the origin's and the queue's counters, the admission cursor, progress;
- `progress`: the progress lines.
"""

from __future__ import annotations

from simulator.driver.config import (
    SYNTHETIC_NETWORK,
    DriverConfig,
    NotLoopback,
    require_loopback,
    synthetic_address,
)
from simulator.driver.registrant import Admission, DriverStats
from simulator.driver.runner import LiveResult, LiveRun, run_live
from simulator.stats import OrderCheck, admission_order

__all__ = [
    "SYNTHETIC_NETWORK",
    "Admission",
    "DriverConfig",
    "DriverStats",
    "LiveResult",
    "LiveRun",
    "NotLoopback",
    "OrderCheck",
    "admission_order",
    "require_loopback",
    "run_live",
    "synthetic_address",
]
