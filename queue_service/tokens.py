"""Admission tokens: Ed25519-signed JWTs (EdDSA), a rotating key ring, JWKS, and verification.

An origin verifies a token offline with the public keys from `/.well-known/jwks.json`:
standard JWT + JWKS, so any language's JWT library works. In Python::

    verifier = TokenVerifier.from_jwks(jwks_dict, issuer="gelombang")
    claims = verifier.verify(token, wave="prakerja-2026-1")
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from queue_service.clock import Clock, SystemClock

log = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
DEFAULT_ISSUER = "gelombang"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "jti", "iat", "exp")


class InvalidAdmissionToken(Exception):
    """The token is forged, expired, for another wave, signed by an unknown key, or malformed."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint: the same key always has the same `kid`, on every replica."""
    canonical = orjson.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(public_key_bytes(key))},
        option=orjson.OPT_SORT_KEYS,
    )
    return _b64url(hashlib.sha256(canonical).digest())[:16]


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(public_key_bytes(key)),
        "kid": key_id(key),
        "alg": ALGORITHM,
        "use": "sig",
    }


@dataclass(frozen=True)
class KeyRing:
    """One signing key and every public key still accepted (rotation keeps old ones here)."""

    signing_key: Ed25519PrivateKey
    public_keys: Mapping[str, Ed25519PublicKey]

    @property
    def signing_kid(self) -> str:
        return key_id(self.signing_key.public_key())

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [public_jwk(k) for k in self.public_keys.values()]}

    @classmethod
    def from_keys(
        cls, signing_key: Ed25519PrivateKey, extra_public: Iterable[Ed25519PublicKey] = ()
    ) -> KeyRing:
        keys: dict[str, Ed25519PublicKey] = {}
        for pub in (signing_key.public_key(), *extra_public):
            keys[key_id(pub)] = pub
        return cls(signing_key=signing_key, public_keys=keys)

    @classmethod
    def from_pem_files(cls, paths: Iterable[Path]) -> KeyRing:
        """The first file is the signing (private) key; later files, private or public PEM,
        are kept for verification only, so tokens signed before a rotation stay valid."""
        paths = list(paths)
        if not paths:
            raise ValueError("at least one signing key file is needed")
        signing = _load_private(paths[0])
        extra = [_load_public(p) for p in paths[1:]]
        return cls.from_keys(signing, extra)

    @classmethod
    def load_or_create(cls, directory: Path) -> KeyRing:
        """Development default: keys live in `directory`; the newest signs, all verify."""
        directory.mkdir(parents=True, exist_ok=True)
        files = sorted(directory.glob("signing-*.pem"), reverse=True)
        if not files:
            path = directory / f"signing-{time.strftime('%Y%m%dT%H%M%S')}.pem"
            write_private_key(Ed25519PrivateKey.generate(), path)
            log.warning("generated a new admission signing key at %s", path)
            files = [path]
        return cls.from_pem_files(files)


def write_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(pem)


def _load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def _load_public(path: Path) -> Ed25519PublicKey:
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return _load_private(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True)
class AdmissionClaims:
    wave: str
    subject: str
    token_id: str
    issued_at: int
    expires_at: int
    ticket: int
    incarnation: str
    """The incarnation of the wave's data that issued the ticket (tickets.py)."""
    stamp: str
    """The ticket's random stamp (tickets.py): with the number and incarnation, one holder."""
    one_time: bool
    """The wave asks origins to honour this token from one browser only (origin_guard.py)."""


def token_id(wave: str, incarnation: str, ticket: int, stamp: str) -> str:
    """The `jti` of a ticket's admission token: one admission, one id, on every replica."""
    return f"{wave}.{incarnation}.{ticket}.{stamp}"


class TokenIssuer:
    def __init__(self, keyring: KeyRing, issuer: str = DEFAULT_ISSUER) -> None:
        self._keyring = keyring
        self._issuer = issuer
        self._kid = keyring.signing_kid

    def issue(
        self,
        *,
        wave: str,
        subject: str,
        ticket: int,
        incarnation: str,
        stamp: str,
        admitted_at: float,
        expires_at: float,
        one_time: bool = False,
    ) -> str:
        """Deterministic for one admission (Ed25519 signatures are), so replicas agree."""
        payload: dict[str, Any] = {
            "iss": self._issuer,
            "aud": wave,
            "sub": subject,
            "jti": token_id(wave, incarnation, ticket, stamp),
            "iat": int(admitted_at),
            "exp": int(expires_at),
            "tkt": ticket,
            "inc": incarnation,
            "stp": stamp,
        }
        if one_time:
            payload["once"] = True
        return jwt.encode(
            payload, self._keyring.signing_key, algorithm=ALGORITHM, headers={"kid": self._kid}
        )


class TokenVerifier:
    """Verifies admission tokens against known public keys, offline."""

    def __init__(
        self,
        public_keys: Mapping[str, Ed25519PublicKey],
        *,
        issuer: str = DEFAULT_ISSUER,
        leeway_s: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        self._keys = dict(public_keys)
        self._issuer = issuer
        self._leeway = leeway_s
        self._clock = clock or SystemClock()

    @classmethod
    def from_keyring(cls, keyring: KeyRing, **kwargs: Any) -> TokenVerifier:
        return cls(keyring.public_keys, **kwargs)

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any], **kwargs: Any) -> TokenVerifier:
        keys: dict[str, Ed25519PublicKey] = {}
        for jwk in jwks.get("keys", []):
            if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                continue
            key = jwt.PyJWK(dict(jwk), algorithm=ALGORITHM).key
            if isinstance(key, Ed25519PublicKey):
                keys[str(jwk.get("kid") or key_id(key))] = key
        if not keys:
            raise ValueError("the JWKS holds no Ed25519 keys")
        return cls(keys, **kwargs)

    @property
    def leeway_s(self) -> float:
        """Clock skew forgiven on `exp` and `iat`."""
        return self._leeway

    @property
    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return dict(self._keys)

    def update_keys(self, public_keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._keys = dict(public_keys)

    def verify(self, token: str, *, wave: str | None = None) -> AdmissionClaims:
        """Return the claims of a valid token for `wave` (any wave if None), or raise."""
        if not token.isascii() or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidAdmissionToken("malformed token: not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidAdmissionToken(f"malformed token: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidAdmissionToken("token is not signed with EdDSA")
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise InvalidAdmissionToken("token is signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=wave,
                issuer=self._issuer,
                # time claims are checked below against the injected clock
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_aud": wave is not None,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidAdmissionToken(str(exc)) from None
        self._check_times(claims)
        audience = claims["aud"]
        if not isinstance(audience, str):
            raise InvalidAdmissionToken("token audience must be one wave")
        return AdmissionClaims(
            wave=audience,
            subject=str(claims["sub"]),
            token_id=str(claims["jti"]),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            ticket=_ticket_from(claims),
            incarnation=str(claims.get("inc", "")),
            stamp=str(claims.get("stp", "")),
            one_time=claims.get("once") is True,
        )

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock.now()
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise InvalidAdmissionToken("exp and iat must be numbers")
        if now >= exp + self._leeway:
            raise InvalidAdmissionToken("token has expired")
        if iat > now + self._leeway:
            raise InvalidAdmissionToken("token is not yet valid")


def _ticket_from(claims: Mapping[str, Any]) -> int:
    ticket = claims.get("tkt")
    if isinstance(ticket, int) and ticket > 0:
        return ticket
    raise InvalidAdmissionToken("token has no ticket claim")
