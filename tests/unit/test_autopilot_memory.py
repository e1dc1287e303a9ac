"""The autopilot's memory between decisions lives in the wave's Redis hash (`lua/autopilot.lua`),
so whichever process claims the next interval decides from the same state: what the law
remembers (`ControllerState`) comes back as it was written, and an operator's change makes it
forget the target it was climbing back to (the operator's value is the new start). The admin
view and `gelombang wave show` say where it is climbing back to."""

from __future__ import annotations

import asyncio
import math
import time
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis

from queue_service.admin import autopilot_view
from queue_service.autopilot import ControllerState, parse_autopilot
from queue_service.autopilot_loop import controller_state, state_fields
from queue_service.commands.wave import describe_autopilot
from queue_service.store import Store
from queue_service.waves import parse_wave

WAVE = "memory"
INTERVAL_S = 0.2
CONFIG = parse_autopilot(
    {"mode": "on", "prometheus_url": "http://127.0.0.1:9", "min_active": 5, "max_active": 500}
)


async def claim_next(store: Store, owner: str) -> dict[str, str]:
    """The next interval's claim, as another process would take it."""
    for _ in range(20):
        claim = await store.autopilot_claim(WAVE, owner, INTERVAL_S)
        if claim.claimed:
            return claim.state
        await asyncio.sleep(INTERVAL_S / 4)
    raise AssertionError("no interval could be claimed")


async def test_the_laws_memory_survives_redis_and_an_operators_change_resets_the_return(
    redis_client: aioredis.Redis,
) -> None:
    store = Store(redis_client, clock=None, timeout_s=5.0)  # Redis time, as in production
    now = time.time()
    await store.put_wave(
        parse_wave(WAVE, {"opens_at": now - 60, "closes_at": now + 3600, "admit_rate": 50,
                          "max_active": 400, "origin_url": "http://127.0.0.1:9/"})
    )  # fmt: skip
    remembered = ControllerState(
        target=98, last_decrease_at=now - 3, last_increase_at=now - 40, breached=True,
        recover_to=140,
    )  # fmt: skip
    first = await store.autopilot_claim(WAVE, "process-a", INTERVAL_S)
    assert first.claimed
    record = {"action": "decrease", "reason": "test", **state_fields(remembered)}
    applied = await store.autopilot_apply(
        WAVE, "process-a", first.interval, apply=True, target=98, admit_rate=3.0, record=record
    )
    assert applied.status == "applied"

    read = controller_state(await claim_next(store, "process-b"), CONFIG, 400)
    assert read.target == 98 and read.recover_to == 140 and read.breached
    assert math.isclose(read.last_decrease_at, remembered.last_decrease_at, abs_tol=1e-3)
    assert math.isclose(read.last_increase_at, remembered.last_increase_at, abs_tol=1e-3)

    # the admin view and `gelombang wave show` say where it is climbing back to
    state, recent = await store.autopilot_view(WAVE)
    view = autopilot_view(CONFIG, state, recent)
    assert view["target_active"] == 98 and view["recover_to"] == 140
    assert "climbing back to 140 sessions" in describe_autopilot(view, ZoneInfo("UTC"))

    hold_until = now + 600
    await store.autopilot_manual(WAVE, int(hold_until * 1000), 77, "admin@test")
    held = controller_state(await claim_next(store, "process-c"), CONFIG, 400)
    assert held.target == 77 and held.recover_to == 0
    state, recent = await store.autopilot_view(WAVE)
    assert autopilot_view(CONFIG, state, recent)["recover_to"] is None
    assert math.isclose(held.hold_until, hold_until, abs_tol=1e-2)
