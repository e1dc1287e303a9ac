"""Admission checks for reverse proxies: an origin protected with no line of its code (nginx
`auth_request`, Caddy `forward_auth`, Traefik `forwardAuth`; configurations in deploy/).

A proxy asks `GET /api/v1/waves/{wave}/verify` before each request to the origin, passing the
browser's headers. The token is read from `Authorization: Bearer`, the `gelombang_token` query
parameter of the original URI (`X-Original-URI` from nginx, `X-Forwarded-Uri` from Caddy and
Traefik; the waiting room's redirect puts it there once), or the `gelombang_admission` cookie.
It is checked as the origin guard checks it (origin_guard.py): signature, wave, expiry,
revocation (the session ended), and for a wave with `one_time_tokens` the browser binding.

Cost: a token seen before is a dictionary look-up (its verified claims are cached until it
expires); revocations are mirrored from the wave's Redis stream at most every
REVOCATION_MIRROR_S per process, not read per request; a one-time token's binding is read from
Redis once per process and token (bindings never change). So a check costs about a status poll
(loadtests/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from queue_service.clock import Clock, SystemClock
from queue_service.errors import StoreUnavailable
from queue_service.store import REVOKED_PAGE, Store
from queue_service.tokens import AdmissionClaims, InvalidAdmissionToken, TokenVerifier

REVOCATION_MIRROR_S = 0.5
"""A session ended anywhere is refused by every process's verify route within this."""
REVOCATION_STALE_LIMIT_S = 30.0
"""While Redis is unreachable, checks go on from the last copy of the revocations this long."""
CLAIMS_CACHE_SIZE = 16_384
BINDINGS_CACHE_SIZE = 65_536
BINDING_BYTES = 16


class Refused(NamedTuple):
    code: str
    message: str


class Admitted(NamedTuple):
    claims: AdmissionClaims
    binding: str | None
    """The one-time token's binding; None for a token that is not one-time."""
    first_use: bool
    """This request bound the one-time token: the browser must be given the binding."""


@dataclass
class _Mirror:
    """A wave's revocations as this process last read them."""

    after: str = "0-0"
    read_at: float = -1e9
    """When it was last read (monotonic); never yet: far in the past."""
    retry_at: float = 0.0
    """After a failed read, not before this (monotonic)."""
    revoked: dict[str, float] = field(default_factory=dict)
    """jti -> when this process learnt of it (monotonic); kept for a session's length."""
    refreshing: asyncio.Future[None] | None = None


class AdmissionCheck:
    def __init__(self, store: Store, verifier: TokenVerifier, clock: Clock | None = None) -> None:
        self._store = store
        self._verifier = verifier
        self._clock = clock or SystemClock()
        self._claims: OrderedDict[tuple[str, str], AdmissionClaims] = OrderedDict()
        self._bindings: OrderedDict[str, str] = OrderedDict()
        self._mirrors: dict[str, _Mirror] = {}

    async def check(
        self, wave: str, token: str | None, binding: str | None, session_ttl_s: float
    ) -> Admitted | Refused:
        if not token:
            return Refused("missing_token", "No admission token: wait your turn in the queue.")
        claims = self._claims_of(wave, token)
        if isinstance(claims, Refused):
            return claims
        if await self._is_revoked(wave, claims.token_id, session_ttl_s):
            return Refused("session_ended", "This admission's session has ended.")
        if not claims.one_time:
            return Admitted(claims, None, False)
        candidate = binding or secrets.token_urlsafe(BINDING_BYTES)
        bound = await self._bind(wave, claims, candidate)
        if bound != candidate:
            return Refused(
                "token_already_used", "This admission token is in use by another browser."
            )
        return Admitted(claims, bound, binding is None)

    def _claims_of(self, wave: str, token: str) -> AdmissionClaims | Refused:
        key = (wave, token)
        claims = self._claims.get(key)
        if claims is None:
            try:
                claims = self._verifier.verify(token, wave=wave)
            except InvalidAdmissionToken as exc:
                return Refused("invalid_token", f"Admission token refused: {exc}.")
            self._claims[key] = claims
            if len(self._claims) > CLAIMS_CACHE_SIZE:
                self._claims.popitem(last=False)
        elif self._clock.now() >= claims.expires_at + self._verifier.leeway_s:
            del self._claims[key]
            return Refused("invalid_token", "Admission token refused: token has expired.")
        return claims

    async def _bind(self, wave: str, claims: AdmissionClaims, candidate: str) -> str:
        bound = self._bindings.get(claims.token_id)
        if bound is None:
            until_ms = int((claims.expires_at + self._verifier.leeway_s) * 1000)
            bound = await self._store.bind_once(wave, claims.token_id, candidate, until_ms)
            self._bindings[claims.token_id] = bound
            if len(self._bindings) > BINDINGS_CACHE_SIZE:
                self._bindings.popitem(last=False)
        return bound

    async def _is_revoked(self, wave: str, token_id: str, session_ttl_s: float) -> bool:
        mirror = self._mirrors.setdefault(wave, _Mirror())
        now = time.monotonic()
        if now - mirror.read_at > REVOCATION_MIRROR_S and now >= mirror.retry_at:
            if mirror.refreshing is None:
                mirror.refreshing = asyncio.ensure_future(
                    self._refresh(wave, mirror, session_ttl_s)
                )
            refreshing = mirror.refreshing
            try:
                await asyncio.shield(refreshing)
            except StoreUnavailable:
                mirror.retry_at = now + REVOCATION_MIRROR_S  # not every check waits on Redis
                # A session ends only through Redis, so while no process can reach it nothing is
                # revoked: the copy stays good for a while. Past REVOCATION_STALE_LIMIT_S (this
                # process alone may be cut off while others write), refuse to answer (503).
                if time.monotonic() - mirror.read_at > REVOCATION_STALE_LIMIT_S:
                    raise
            finally:
                if mirror.refreshing is refreshing and refreshing.done():
                    mirror.refreshing = None
        return token_id in mirror.revoked

    async def _refresh(self, wave: str, mirror: _Mirror, session_ttl_s: float) -> None:
        """Read what was revoked since the last read (every page), forget what has expired."""
        started = time.monotonic()
        while True:
            entries = await self._store.revoked_after(wave, mirror.after)
            for position, token_id in entries:
                mirror.revoked[token_id] = started
                mirror.after = position
            if len(entries) < REVOKED_PAGE:
                break
        mirror.read_at = started
        cutoff = started - session_ttl_s - 60  # a revoked token has expired by then
        if mirror.revoked and next(iter(mirror.revoked.values())) < cutoff:
            mirror.revoked = {k: v for k, v in mirror.revoked.items() if v >= cutoff}
