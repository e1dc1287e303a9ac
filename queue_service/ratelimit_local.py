"""Per-process GCRA for status polls.

Status polls are answered from the process's own copy of the wave (no Redis round trip), so
their rate limits live in the process too: with N processes behind a load balancer, a client
gets up to N times each rule's allowance (documented in the README). Joins keep their limits in
Redis (lua/join.lua), shared by every process, because a join writes there anyway.

State is two generations of dictionaries: an entry untouched for a whole generation cannot
matter any more (its theoretical arrival time is in the past), so dropping the older generation
forgets it at no per-entry cost. Memory is bounded by the keys seen in two generations.
"""

from __future__ import annotations

from collections.abc import Hashable

from queue_service.ratelimit import Rule


class LocalGcra:
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self._interval = 1.0 / rule.rate_per_s
        self._tolerance = rule.burst * self._interval
        # an entry's TAT is at most `tolerance` ahead of the last time it was charged
        self._generation_s = max(1.0, self._tolerance)
        self._current: dict[Hashable, float] = {}
        self._previous: dict[Hashable, float] = {}
        self._rotated_at = 0.0

    def _rotate(self, now: float) -> None:
        if now - self._rotated_at >= self._generation_s:
            self._previous, self._current = self._current, {}
            self._rotated_at = now

    def retry_after(self, key: Hashable, now: float) -> float:
        """0 if a request under `key` is allowed now, else the seconds until it would be."""
        self._rotate(now)
        tat = self._current.get(key) or self._previous.get(key) or now
        allow_at = max(tat, now) + self._interval - self._tolerance
        return 0.0 if now >= allow_at else allow_at - now

    def charge(self, key: Hashable, now: float) -> None:
        tat = self._current.get(key) or self._previous.get(key) or now
        self._current[key] = max(tat, now) + self._interval

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)
