"""A wave's call-backs (`notify` object): who may leave the line and be called back, by which
channels, how long before their turn they are told, how long they have to come back, and
whether verified holders still waiting when the wave ends keep their standing in the next one.

Validated like `autopilot` (autopilot.py): a partial object keeps the fields it does not name.
The deployment's own settings decide what a channel can do at all (settings.py: the webhook
secret, SMTP, VAPID keys); a wave that asks for a channel the deployment cannot send is
refused at PUT (`check_channels`), never left to fail at the moment people are called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from queue_service.errors import BadRequest
from queue_service.keys import WAVE_ID

CONTACT_KINDS = ("sms", "whatsapp", "email", "webpush")
WEBHOOK_KINDS = frozenset({"sms", "whatsapp"})
"""Sent through the wave's signed webhook: any SMS or WhatsApp gateway sits behind it."""
CARRY_ORDERS = ("ahead", "prequeue")
MIN_LEAD_S = 60.0
MIN_RETURN_WINDOW_S = 120.0
MAX_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True)
class NotifyConfig:
    channels: tuple[str, ...] = ()
    """Contact kinds a holder may choose (sms, whatsapp, email, webpush); none = call-backs off."""
    lead_s: float = 900.0
    """A holder who opted in is told when their estimated wait falls below this."""
    return_window_s: float = 1800.0
    """After being told, the holder has this long to come back; the place is kept meanwhile
    (and never less than half of it after the line reaches them: a pause or a slower line
    never ends a window before the turn came)."""
    webhook_url: str = ""
    """Where SMS and WhatsApp messages go, signed (outbox.py, docs/callbacks.md)."""
    carry_over_to: str = ""
    """The next wave: verified holders still waiting when this one closes or fills keep a place
    there ('' = none)."""
    carry_over_order: str = "ahead"
    """'ahead': before the next wave's newcomers, in their order here; 'prequeue': into the next
    wave's shuffled pre-queue, drawn with everyone who joined it."""

    @property
    def enabled(self) -> bool:
        return bool(self.channels)

    def public_dict(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "lead_s": self.lead_s,
            "return_window_s": self.return_window_s,
            "webhook_url": self.webhook_url,
            "carry_over_to": self.carry_over_to,
            "carry_over_order": self.carry_over_order,
        }

    def to_redis(self) -> dict[str, str]:
        """The fields the Lua scripts read (lua/_lib.lua CFG_FIELDS), in ms."""
        return {
            "notify_on": "1" if self.enabled else "0",
            "return_window_ms": str(int(self.return_window_s * 1000)),
        }


NOTIFY_FIELDS = frozenset(NotifyConfig().public_dict())


def _invalid(message: str) -> BadRequest:
    return BadRequest(f"notify: {message}", code="invalid_wave")


def _seconds(data: Mapping[str, Any], name: str, minimum: float) -> float:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"{name} must be a number of seconds")
    if not minimum <= value <= MAX_SECONDS:
        raise _invalid(f"{name} must be between {minimum:g} and {MAX_SECONDS:g} seconds")
    return float(value)


def parse_notify(value: Any, current: NotifyConfig | None = None) -> NotifyConfig:
    """Validate a full or partial `notify` object; fields not given keep `current`'s."""
    if value is None:
        return current or NotifyConfig()
    if not isinstance(value, Mapping):
        raise _invalid("must be an object")
    unknown = set(value) - NOTIFY_FIELDS
    if unknown:
        raise _invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    merged = {**(current or NotifyConfig()).public_dict(), **value}
    channels = merged["channels"]
    if not isinstance(channels, list | tuple) or any(c not in CONTACT_KINDS for c in channels):
        raise _invalid(f"channels must be a list of {', '.join(CONTACT_KINDS)}")
    url = merged["webhook_url"]
    if not isinstance(url, str) or len(url) > 2048:
        raise _invalid("webhook_url must be an http(s) URL")
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise _invalid("webhook_url must be an absolute http(s) URL")
    if WEBHOOK_KINDS & set(channels) and not url:
        raise _invalid("sms and whatsapp are sent through webhook_url: name the gateway's URL")
    carry_to = merged["carry_over_to"]
    if not isinstance(carry_to, str) or (carry_to and not WAVE_ID.fullmatch(carry_to)):
        raise _invalid("carry_over_to must be a wave id")
    order = merged["carry_over_order"]
    if order not in CARRY_ORDERS:
        raise _invalid(f"carry_over_order must be one of {', '.join(CARRY_ORDERS)}")
    config = NotifyConfig(
        channels=tuple(dict.fromkeys(channels)),
        lead_s=_seconds(merged, "lead_s", MIN_LEAD_S),
        return_window_s=_seconds(merged, "return_window_s", MIN_RETURN_WINDOW_S),
        webhook_url=url,
        carry_over_to=carry_to,
        carry_over_order=order,
    )
    if config.carry_over_to and not config.enabled:
        raise _invalid("carry_over_to tells holders by the channel they chose: enable channels")
    return config


def check_channels(config: NotifyConfig, available: frozenset[str], wave: str) -> None:
    """Refuse a wave whose channels this deployment cannot send (`available`: from settings)."""
    missing = [c for c in config.channels if c not in available]
    if missing:
        raise _invalid(
            f"this deployment cannot send {', '.join(missing)} (see docs/callbacks.md: email "
            "needs GELOMBANG_SMTP_URL and GELOMBANG_SMTP_FROM, webpush GELOMBANG_VAPID_KEY, sms "
            "and whatsapp GELOMBANG_WEBHOOK_SECRET)"
        )
    if config.carry_over_to == wave:
        raise _invalid("carry_over_to must name another wave")
