"""Typed app state of the sample origin."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from aiohttp import web

from simulator.origin.capacity import CapacityModel
from simulator.origin.config import OriginConfig
from simulator.origin.metrics import OriginMetrics
from simulator.origin.store import RegistrationStore

log = logging.getLogger(__name__)


@dataclass
class Origin:
    config: OriginConfig
    capacity: CapacityModel
    store: RegistrationStore
    metrics: OriginMetrics
    clock: Callable[[], float] = time.time

    @classmethod
    def build(cls, config: OriginConfig, clock: Callable[[], float] = time.time) -> Origin:
        rng = random.Random(config.seed)
        capacity = CapacityModel(config, rng)
        metrics = OriginMetrics(config.capacity)
        metrics.inflight.set_function(lambda: capacity.inflight)
        return cls(
            config=config,
            capacity=capacity,
            store=RegistrationStore(
                otp_max_sends=config.otp_max_sends,
                otp_lockout_s=config.otp_lockout_s,
                otp_max_verify_attempts=config.otp_max_verify_attempts,
                rng=rng,
            ),
            metrics=metrics,
            clock=clock,
        )

    async def set_capacity(self, capacity: int) -> None:
        """Serve `capacity` requests at once from now on (a schedule step or an admin call)."""
        await self.capacity.resize(capacity)
        self.metrics.capacity.set(capacity)
        log.info("origin capacity now %d", capacity)

    def today(self) -> date:
        return self.config.today or date.fromtimestamp(self.clock())


ORIGIN = web.AppKey("origin", Origin)
