"""Client addresses behind load balancers."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(request: web.Request, trusted: Sequence[Network]) -> str:
    """The peer address; X-Forwarded-For is believed only when the peer is a trusted proxy,
    and then only up to the first address that is not itself a trusted proxy."""
    peer = request.remote or "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a garbled header is not an identity
    return hops[0] if hops else peer


IPV6_GROUP_PREFIX = 64


def rate_limit_key(address: str) -> str:
    """The identity a per-address rate limit counts: an IPv4 address as it is, an IPv6 address
    by its /64 (one subscriber's prefix: a phone may use any address inside it, so counting
    single addresses would give one person 2^64 allowances)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    network = ipaddress.IPv6Network(f"{ip}/{IPV6_GROUP_PREFIX}", strict=False)
    return f"{network.network_address}/{IPV6_GROUP_PREFIX}"


def forwarded_https(request: web.Request, trusted: Sequence[Network]) -> bool:
    """Whether a trusted proxy says the client reached it over TLS (X-Forwarded-Proto). Only
    the proxy's word counts: a client's own header, sent to us directly, is ignored."""
    peer = request.remote or ""
    if not trusted or not _trusted(peer, trusted):
        return False
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https"
