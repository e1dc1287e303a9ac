"""The `[callbacks]` table of a scenario: who leaves the line to be called back, by which
channel, and how they answer the call (issue 24, docs/callbacks.md).

    [callbacks]
    optin_share = 0.3          # of the people who stay in line (bots never opt in)
    never_return_share = 0.1   # of those who opt in: never come back
    return_median_s = 300.0    # the delay between the first message and coming back:
    return_sigma = 0.8         #   lognormal(median, sigma)
    lead_s = 900.0             # the wave's notify.lead_s
    return_window_s = 1800.0   # the wave's notify.return_window_s

    carry_over_to = "prakerja-72"  # optional: the next wave (verified joins only), and
    carry_over_order = "ahead"     #   where the carried go there: "ahead" or "prequeue"

    [callbacks.channels]       # the channel mix: kind = share (normalised)
    sms = 0.5
    whatsapp = 0.3
    email = 0.1
    webpush = 0.1

A scenario without the table (or with `optin_share = 0`) has no call-backs: its wave offers
none. The wave's `notify` object comes from it (`simulator.wave_definition`), so a scenario
is always a wave the service takes: `lead_s` and `return_window_s` keep the service's minimums.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from queue_service.notify_config import (
    CARRY_ORDERS,
    CONTACT_KINDS,
    MAX_SECONDS,
    MIN_LEAD_S,
    MIN_RETURN_WINDOW_S,
)


@dataclass(frozen=True)
class CallbackParams:
    optin_share: float = 0.0
    """Of the people who keep their place past the ETA they were shown (bots never opt in)."""
    never_return_share: float = 0.0
    """Of those who opt in: never come back (their place is skipped when the window ends)."""
    return_median_s: float = 300.0
    """The delay between the first message they get and coming back: lognormal median."""
    return_sigma: float = 0.8
    lead_s: float = 900.0
    return_window_s: float = 1800.0
    channels: dict[str, float] = field(default_factory=lambda: {"sms": 1.0})
    """The channel mix: contact kind -> share (normalised to 1)."""
    carry_over_to: str = ""
    """The next wave: holders still waiting who opted in keep a place there ('' = none)."""
    carry_over_order: str = "ahead"
    """'ahead' of the next wave's newcomers, or into its 'prequeue' draw."""

    def __post_init__(self) -> None:
        for name in ("optin_share", "never_return_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"callbacks.{name} must be in [0, 1]")
        if self.return_median_s <= 0 or self.return_sigma < 0:
            raise ValueError("callbacks.return_median_s must be > 0, return_sigma >= 0")
        if not MIN_LEAD_S <= self.lead_s <= MAX_SECONDS:
            raise ValueError(f"callbacks.lead_s must be at least {MIN_LEAD_S:g} s (the service's)")
        if not MIN_RETURN_WINDOW_S <= self.return_window_s <= MAX_SECONDS:
            raise ValueError(
                f"callbacks.return_window_s must be at least {MIN_RETURN_WINDOW_S:g} s "
                "(the service's)"
            )
        unknown = sorted(set(self.channels) - set(CONTACT_KINDS))
        if unknown:
            raise ValueError(
                f"[callbacks.channels] unknown kinds {unknown}; known: {list(CONTACT_KINDS)}"
            )
        shares = self.channels.values()
        if any(isinstance(s, bool) or not isinstance(s, int | float) or s < 0 for s in shares):
            raise ValueError("[callbacks.channels] shares must be numbers >= 0")
        if sum(shares) <= 0:
            raise ValueError("[callbacks.channels] needs a share > 0")
        if self.carry_over_order not in CARRY_ORDERS:
            raise ValueError(f"callbacks.carry_over_order must be one of {list(CARRY_ORDERS)}")
        if self.carry_over_to and not self.enabled:
            raise ValueError("callbacks.carry_over_to needs call-backs: optin_share > 0")

    @property
    def enabled(self) -> bool:
        return self.optin_share > 0

    @property
    def channel_mix(self) -> tuple[tuple[str, float], ...]:
        """(kind, cumulative share) in CONTACT_KINDS order, for a draw on [0, 1)."""
        total = sum(self.channels.values())
        mix, running = [], 0.0
        for kind in CONTACT_KINDS:
            share = self.channels.get(kind, 0.0)
            if share > 0:
                running += share / total
                mix.append((kind, running))
        return tuple(mix)

    @property
    def offered(self) -> tuple[str, ...]:
        """The channels the wave offers: those anyone picks."""
        return tuple(kind for kind, _ in self.channel_mix)


def notify_object(params: CallbackParams, webhook_url: str) -> Mapping[str, object]:
    """The wave's `notify` object (queue_service.notify_config) for these call-backs."""
    notify: dict[str, object] = {
        "channels": list(params.offered),
        "lead_s": params.lead_s,
        "return_window_s": params.return_window_s,
        "webhook_url": webhook_url,
    }
    if params.carry_over_to:
        notify["carry_over_to"] = params.carry_over_to
        notify["carry_over_order"] = params.carry_over_order
    return notify
