"""What a live run is pointed at and how far it may go: `DriverConfig`, checked on creation.

Targets must be loopback addresses: the driver generates a flood and must never be pointed at
someone else. Each synthetic registrant claims an address of its own in X-Forwarded-For
(`synthetic_address`), from the shared address space of carrier-grade NATs: never routable,
nothing is ever sent to it.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
SYNTHETIC_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")
"""Shared address space (RFC 6598, carrier-grade NAT): each synthetic registrant claims one
of these in X-Forwarded-For, never a routable address. Nothing is ever sent to them."""
MODES = ("direct", "queued")


def synthetic_address(index: int) -> str:
    """Registrant `index`'s own client address, the same in every run."""
    offset = (index * 2_654_435_761) % (SYNTHETIC_NETWORK.num_addresses - 2) + 1
    return str(SYNTHETIC_NETWORK.network_address + offset)


class NotLoopback(ValueError):
    """A target URL that is not on this machine."""


def require_loopback(url: str, what: str) -> str:
    """Return `url` without a trailing slash, or raise if its host is not loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotLoopback(f"{what} must be an http:// URL, got {url!r}")
    host = parts.hostname
    if host.lower() not in LOOPBACK_NAMES:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise NotLoopback(
                f"{what} {url!r} is not a loopback address: the simulator only drives servers "
                "on this machine (127.0.0.1, ::1 or localhost)"
            )
    return url.rstrip("/")


@dataclass(frozen=True)
class DriverConfig:
    mode: str  # "direct" or "queued"
    origin_url: str
    queue_url: str | None = None
    max_registrants: int = 5000
    max_seconds: float = 120.0
    seed: int | None = None  # None: the scenario's seed
    admin_token: str | None = None  # queued: (re)configure the wave to open relative to t = 0
    connection_limit: int = 2000  # open connections at once, shared by every registrant
    progress: TextIO | None = sys.stderr
    wave: str | None = None  # None: the scenario's wave id
    webhook_secret: str | None = None
    """A scenario with call-backs: the deployment's GELOMBANG_WEBHOOK_SECRET (base64), with
    which the driver's gateway checks the messages' signatures (None: that variable)."""
    wave_changes: Mapping[str, Any] = field(default_factory=dict)
    """Fields of the wave the run creates that differ from the scenario's (an `autopilot`)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be direct or queued, got {self.mode!r}")
        require_loopback(self.origin_url, "--origin-url")
        if self.mode == "queued":
            if not self.queue_url:
                raise ValueError("queued mode needs the queue URL")
            require_loopback(self.queue_url, "--queue-url")
        if self.max_registrants < 1 or self.max_seconds <= 0:
            raise ValueError("max_registrants and max_seconds must be positive")

    @property
    def queued(self) -> bool:
        return self.mode == "queued"


def gateway_secret(config: DriverConfig, callbacks_enabled: bool) -> str | None:
    """The webhook secret the driver's gateway checks call-back messages with: None when the
    run has no call-backs; a ValueError naming what to set when one is needed and missing."""
    if not (config.queued and callbacks_enabled):
        return None
    secret = config.webhook_secret or os.environ.get("GELOMBANG_WEBHOOK_SECRET")
    if not secret:
        raise ValueError(
            "a scenario with call-backs needs the deployment's webhook secret "
            "(GELOMBANG_WEBHOOK_SECRET, base64): the driver's gateway checks signatures"
        )
    return secret
