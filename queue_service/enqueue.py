"""Verified joins: an enqueue token, signed by the registration site (the origin) for a person
who has logged in there, is the only way into a wave that asks for it. A leaked NIK is then
worth nothing: the queue's identity of a registrant is the token's `sub`, the origin's account.

The token is a standard JWT, so any language mints it:
  header  {"alg": "EdDSA" | "ES256" | "RS256", "kid": "<key id>", "typ": "JWT"}
  claims  {"sub": "<account id>", "aud": "<wave id>", "iat": <now>, "exp": <now + <= 600>,
           "iss": "<the wave's enqueue_issuer, if it names one>"}
          and, for call-backs (docs/callbacks.md), the standard OIDC claims of what the site
          verified: "phone_number" with "phone_number_verified": true, "email" with
          "email_verified": true
signed with a private key whose public half the wave names (`enqueue_keys`, JWKs, or
`enqueue_jwks_url`, the origin's JWKS). In Python, `mint_enqueue_token()` below does it.
The origin hands the token to the logged-in person's browser (for example as
`/w/<wave>?enqueue_token=<token>`); the waiting page joins with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import aiohttp
import jwt
import orjson

from queue_service.clock import Clock, SystemClock
from queue_service.errors import ServiceUnavailable, Unauthorized
from queue_service.tickets import b64url
from queue_service.waves import WaveConfig, check_public_jwk

ALGORITHMS = ("EdDSA", "ES256", "RS256")
MAX_LIFETIME_S = 600
LEEWAY_S = 5
JWKS_REFRESH_S = 300.0
JWKS_MIN_REFETCH_S = 30.0
JWKS_TIMEOUT_S = 5.0
MAX_TOKEN_LENGTH = 4096


def mint_enqueue_token(
    private_key: Any,
    *,
    wave: str,
    account: str,
    algorithm: str = "EdDSA",
    kid: str | None = None,
    issuer: str | None = None,
    lifetime_s: int = 300,
    now: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """For origins: an enqueue token for `account`, a person logged in at the registration
    site, to join `wave`. `private_key`: a `cryptography` private key (or PEM bytes)."""
    if not 0 < lifetime_s <= MAX_LIFETIME_S:
        raise ValueError(f"lifetime_s must be in (0, {MAX_LIFETIME_S}]")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": account,
        "aud": wave,
        "iat": issued,
        "exp": issued + lifetime_s,
    }
    if issuer:
        claims["iss"] = issuer
    claims.update(extra_claims or {})  # e.g. phone_number + phone_number_verified
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, private_key, algorithm=algorithm, headers=headers)


class VerifiedAccount(NamedTuple):
    account: str
    """The token's `sub`, exactly as signed."""
    token_key: str
    """Names this token (a digest of it): a token proves a join once (lua/join.lua)."""
    valid_for_s: float
    """How long the token may still be presented (until its exp, plus the leeway)."""
    contacts: Mapping[str, str] = MappingProxyType({})
    """What the registration site verified of this person, for call-backs: "phone" (the OIDC
    claims phone_number + phone_number_verified) and "email" (email + email_verified)."""


def verified_contacts(claims: Mapping[str, Any]) -> dict[str, str]:
    """The standard OIDC claims of a verified phone number and e-mail, when the registration
    site says it verified them (a join asking for call-backs may then leave the address out)."""
    found = {}
    for claim, flag, name in (
        ("phone_number", "phone_number_verified", "phone"),
        ("email", "email_verified", "email"),
    ):
        value = claims.get(claim)
        if claims.get(flag) is True and isinstance(value, str) and 0 < len(value) <= 254:
            found[name] = value
    return found


def token_key(token: str) -> str:
    """A short url-safe name for a token, for the record of its use (never the token itself)."""
    return b64url(hashlib.sha256(token.encode()).digest()[:18])


def _refused(reason: str) -> Unauthorized:
    return Unauthorized(f"Enqueue token refused: {reason}.", code="invalid_enqueue_token")


@dataclass
class _KeySet:
    keys: dict[str, dict[str, Any]]
    """kid ('' for a key without one) -> JWK."""
    fetched_at: float


class EnqueueVerifier:
    """Checks enqueue tokens against each wave's keys; JWKS documents are fetched on first use,
    kept for JWKS_REFRESH_S, and fetched again early (at most every JWKS_MIN_REFETCH_S) when a
    token names an unknown kid: that is how a key rotation at the origin reaches the queue."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._jwks: dict[str, _KeySet] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def account(self, token: object, config: WaveConfig) -> VerifiedAccount:
        """The account of a valid enqueue token for this wave, or 401."""
        if not isinstance(token, str) or not token.isascii() or len(token) > MAX_TOKEN_LENGTH:
            raise _refused("it is not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _refused("it is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise _refused(f"alg must be one of {', '.join(ALGORITHMS)}")
        kid = header.get("kid")
        jwk = await self._key(config, kid if isinstance(kid, str) else "")
        try:
            key = jwt.PyJWK(jwk, algorithm=algorithm).key
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=config.id,
                issuer=config.enqueue_issuer or None,
                # times are checked below against the injected clock
                options={
                    "require": ["sub", "aud", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _refused(str(exc).rstrip(".")) from None
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise _refused("iat and exp must be numbers")
        if exp - iat > MAX_LIFETIME_S:
            raise _refused(f"it may live at most {MAX_LIFETIME_S} s")
        now = self._clock.now()
        if now >= exp + LEEWAY_S:
            raise _refused("it has expired")
        if iat > now + LEEWAY_S:
            raise _refused("it is not valid yet")
        account = claims["sub"]
        if not isinstance(account, str) or not account:
            raise _refused("sub must name the account")
        return VerifiedAccount(
            account, token_key(token), exp + LEEWAY_S - now, verified_contacts(claims)
        )

    async def _key(self, config: WaveConfig, kid: str) -> dict[str, Any]:
        static = {str(k.get("kid", "")): dict(k) for k in config.enqueue_keys}
        if kid in static or (not kid and len(static) == 1):
            return static.get(kid) or next(iter(static.values()))
        if not config.enqueue_jwks_url:
            raise _refused("it is signed by a key this wave does not know")
        keys = await self._fetched(config.enqueue_jwks_url, kid)
        if kid in keys or (not kid and len(keys) == 1):
            return keys.get(kid) or next(iter(keys.values()))
        raise _refused("it is signed by a key this wave does not know")

    async def _fetched(self, url: str, kid: str) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        cached = self._jwks.get(url)
        fresh = cached is not None and now - cached.fetched_at < JWKS_REFRESH_S
        if cached is not None and (kid in cached.keys or not kid) and fresh:
            return cached.keys
        if cached is not None and now - cached.fetched_at < JWKS_MIN_REFETCH_S:
            return cached.keys  # a forged kid must not make us hammer the origin
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            cached = self._jwks.get(url)
            if cached is not None and time.monotonic() - cached.fetched_at < JWKS_MIN_REFETCH_S:
                return cached.keys
            try:
                keys = await _fetch_jwks(url)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                if cached is not None:
                    return cached.keys
                raise ServiceUnavailable(
                    f"The registration site's keys could not be fetched ({type(exc).__name__}).",
                    code="enqueue_keys_unavailable",
                    retry_after_s=5,
                ) from None
            self._jwks[url] = _KeySet(keys, time.monotonic())
            return keys


async def _fetch_jwks(url: str) -> dict[str, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=JWKS_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        response.raise_for_status()
        document = orjson.loads(await response.read())
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, dict[str, Any]] = {}
    for jwk in document["keys"]:
        try:
            checked = check_public_jwk(jwk)
        except ValueError:
            continue  # a JWKS may hold keys of other kinds; skip what we cannot use
        keys[str(checked.get("kid", ""))] = checked
    return keys
