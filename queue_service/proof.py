"""The draw's public side, as the wave info shows it: the commitment from the wave's creation,
the seed and the pre-queue size once drawn (draw.py has the rule). Read from Redis at most once
a second per wave and process before the draw, once only after it (it never changes again)."""

from __future__ import annotations

import time
from typing import Any

from queue_service.store import Store
from queue_service.waves import iso_utc

BEFORE_DRAW_CACHE_S = 1.0
DRAW_RULE = (
    'pre-queue tickets 1..N ordered by HMAC-SHA256(seed, "<wave>:<N>:<seq>") ascending, '
    "ties by seq; docs/audit.md"
)


class DrawCache:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cached: dict[str, tuple[float, str, dict[str, Any]]] = {}
        """Wave -> (read at, wave uid, public fields)."""

    async def public(self, wave: str, uid: str, drawn: bool) -> dict[str, Any]:
        """{"commitment", "seed", "prequeue", "drawn_at", "rule"}: seed, prequeue and drawn_at
        are null until the draw; commitment is null only for a wave created before draws.
        `drawn`: the wave's counts say it is drawn (then a copy from before is stale)."""
        cached = self._cached.get(wave)
        if cached is not None and cached[1] == uid:
            read_at, _, fields = cached
            if fields["drawn_at"] is not None:
                return fields
            if not drawn and time.monotonic() - read_at < BEFORE_DRAW_CACHE_S:
                return fields
        raw = await self._store.draw_public(wave)
        drawn_ms = raw.get("drawn_ms")
        seed = raw.get("seed") or None
        fields = {
            "commitment": raw.get("commitment") or None,
            "seed": seed if drawn_ms and not raw.get("legacy") else None,
            "prequeue": int(raw["prequeue"]) if drawn_ms and raw.get("prequeue") else None,
            "drawn_at": iso_utc(int(drawn_ms) / 1000) if drawn_ms else None,
            "rule": DRAW_RULE,
        }
        self._cached[wave] = (time.monotonic(), uid, fields)
        return fields
