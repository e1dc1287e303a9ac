"""Rate-limit rules (configuration) and the headers a limited client sees.

The limiter itself is GCRA inside the join and status Lua scripts, one call for all of a
request's rules. Per-IP limits must stay generous: Indonesian mobile carriers put many
registrants behind one carrier-grade NAT address.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Rule:
    rate_per_s: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.rate_per_s > 0 and math.isfinite(self.rate_per_s)):
            raise ValueError("rate_per_s must be a positive number")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")

    @property
    def emission_interval_ms(self) -> float:
        return 1000.0 / self.rate_per_s

    def as_args(self) -> tuple[str, str]:
        """(emission interval ms, burst) as the Lua GCRA expects them."""
        return (repr(self.emission_interval_ms), str(self.burst))


@dataclass(frozen=True)
class RateLimitRules:
    enabled: bool = True
    join_per_ip: Rule = field(default_factory=lambda: Rule(rate_per_s=5.0, burst=60))
    join_per_registrant: Rule = field(default_factory=lambda: Rule(rate_per_s=0.5, burst=5))
    status_per_ip: Rule = field(default_factory=lambda: Rule(rate_per_s=100.0, burst=600))
    status_per_ticket: Rule = field(default_factory=lambda: Rule(rate_per_s=1.0, burst=10))

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], base: RateLimitRules | None = None
    ) -> RateLimitRules:
        """`{"enabled": bool, "<rule>": {"rate_per_s": x, "burst": n}}`; unnamed rules keep
        the values of `base` (the deployment's rules when `data` is a wave's override)."""
        base = base or cls()
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown rate-limit rules: {sorted(unknown)}")
        changes: dict[str, Any] = {}
        for name, value in data.items():
            if name == "enabled":
                if not isinstance(value, bool):
                    raise ValueError("rate_limits.enabled must be true or false")
                changes[name] = value
                continue
            if not isinstance(value, Mapping) or set(value) - {"rate_per_s", "burst"}:
                raise ValueError(f"rate limit {name} must be a table with rate_per_s and burst")
            current: Rule = getattr(base, name)
            rate = value.get("rate_per_s", current.rate_per_s)
            burst = value.get("burst", current.burst)
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise ValueError(f"{name}.rate_per_s must be a number")
            if isinstance(burst, bool) or not isinstance(burst, int):
                raise ValueError(f"{name}.burst must be a whole number")
            changes[name] = Rule(rate_per_s=float(rate), burst=burst)
        return replace(base, **changes)


def limited_headers(rule_name: str, rule: Rule, retry_after_ms: int) -> dict[str, str]:
    """`Retry-After` plus the IETF RateLimit fields for a refused request."""
    retry_s = max(1, math.ceil(retry_after_ms / 1000))
    window_s = max(1, math.ceil(rule.burst / rule.rate_per_s))
    return {
        "Retry-After": str(retry_s),
        "RateLimit-Limit": str(rule.burst),
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": str(retry_s),
        "RateLimit-Policy": f'"{rule_name}";q={rule.burst};w={window_s}',
        "RateLimit": f'"{rule_name}";r=0;t={retry_s}',
    }
