"""A call-back's contact: checked and put in one canonical form, encrypted at rest, and the
one-time return code that brings its holder back.

Personal data handled as a ministry must:
- a contact is stored only encrypted (AES-256-GCM with the deployment's contact key,
  GELOMBANG_CONTACT_KEY), with associated data that binds the ciphertext to its wave and its
  ticket: a ciphertext copied onto another ticket, or into another wave, does not decrypt;
- it is deleted when its ticket ends (lua/_lib.lua `reclaim`, and at admission);
- `Contact` has no readable repr: a contact written into a log line by mistake shows as
  `Contact(sms, ***)`, never the number (a test reads every log line of a run for them);
- the return link carries a code derived from the service secret and the ticket (keyed
  BLAKE2b, 128 bits): it names nothing, and Redis keeps only its hash, deleted on first use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from queue_service.errors import BadRequest
from queue_service.notify_config import CONTACT_KINDS
from queue_service.tickets import b64url, subkey

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
RETURN_CODE_BYTES = 16
RETURN_CODE_CHARS = 22
"""A return code as it travels: 16 bytes, url-safe base64 without padding."""
RETURN_BUCKETS = 1 << 12
LANGUAGES = ("id", "en")
MAX_EMAIL = 254
MAX_SUBSCRIPTION = 2048
PHONE_DIGITS = re.compile(r"\+?[0-9]{8,15}")
EMAIL = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}")
PHONE_SEPARATORS = re.compile(r"[\s\-.()]+")


@dataclass(frozen=True, slots=True)
class Contact:
    kind: str
    address: str
    """sms/whatsapp: E.164 (+628...); email: as given, domain lower-cased; webpush: the
    subscription as JSON ({"endpoint", "keys": {"p256dh", "auth"}})."""

    def __repr__(self) -> str:
        return f"Contact({self.kind}, ***)"

    __str__ = __repr__

    def to_bytes(self) -> bytes:
        return orjson.dumps({"k": self.kind, "a": self.address})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Contact:
        data = orjson.loads(raw)
        return cls(str(data["k"]), str(data["a"]))


def _refused(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_contact")


def normalise_phone(raw: str) -> str:
    """An Indonesian or international mobile number in E.164: 0812..., 62812..., +62 812-...
    all become +62812...; anything that cannot be a phone number is refused."""
    text = PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", raw).strip())
    if not PHONE_DIGITS.fullmatch(text):
        raise _refused("The phone number must be 8 to 15 digits, e.g. 0812 3456 7890.")
    if text.startswith("+"):
        return text
    if text.startswith("0"):
        return "+62" + text[1:]  # a national number: Indonesia's country code
    if text.startswith("62"):
        return "+" + text
    return "+" + text


def _subscription(raw: Any) -> str:
    """A Web Push subscription (PushSubscription.toJSON()) with an https endpoint and its two
    keys, re-encoded with only what sending needs."""
    if isinstance(raw, str):
        if len(raw) > MAX_SUBSCRIPTION:
            raise _refused("The push subscription is too long.")
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _refused("The push subscription is not JSON.") from None
    if not isinstance(raw, Mapping):
        raise _refused("The push subscription must be an object with endpoint and keys.")
    endpoint, keys = raw.get("endpoint"), raw.get("keys")
    if not isinstance(endpoint, str) or len(endpoint) > 1024:
        raise _refused("The push subscription's endpoint must be an https URL.")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise _refused("The push subscription's endpoint must be an https URL.")
    if not isinstance(keys, Mapping):
        raise _refused("The push subscription needs keys.p256dh and keys.auth.")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    try:
        if len(_b64decode(str(p256dh))) != 65 or len(_b64decode(str(auth))) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise _refused(
            "The push subscription's keys are not a P-256 key and a 16-byte secret."
        ) from None
    return orjson.dumps({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}).decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_contact(value: Any, channels: tuple[str, ...], verified: Mapping[str, str]) -> Contact:
    """The contact of a request body's `"contact": {"kind", "address"}`. `channels`: the kinds
    the wave offers; `verified`: the contacts the registration site verified ("phone",
    "email"), used when the address is left out."""
    if not isinstance(value, Mapping) or set(value) - {"kind", "address"}:
        raise _refused('contact must be an object: {"kind": ..., "address": ...}.')
    kind = value.get("kind")
    if kind not in CONTACT_KINDS:
        raise _refused(f"contact.kind must be one of {', '.join(CONTACT_KINDS)}.")
    if kind not in channels:
        offered = ", ".join(channels) or "none"
        raise BadRequest(
            f"This wave does not call back by {kind} (it offers: {offered}).",
            code="channel_not_offered",
        )
    address = value.get("address")
    if address is None or address == "":
        source = "email" if kind == "email" else "phone" if kind != "webpush" else ""
        if not source or source not in verified:
            raise _refused(
                "contact.address is required (only a verified join's phone number or e-mail "
                "may be left out)."
            )
        address = verified[source]
    if kind == "webpush":
        return Contact(kind, _subscription(address))
    if not isinstance(address, str) or len(address) > MAX_EMAIL:
        raise _refused("contact.address must be text.")
    if kind == "email":
        text = unicodedata.normalize("NFKC", address).strip()
        if not EMAIL.fullmatch(text):
            raise _refused("The e-mail address is not valid.")
        local, _, domain = text.rpartition("@")
        return Contact(kind, f"{local}@{domain.lower()}")
    return Contact(kind, normalise_phone(address))


def parse_language(value: Any) -> str:
    if value is None:
        return "id"
    if value not in LANGUAGES:
        raise BadRequest("language must be id or en.", code="invalid_contact")
    return str(value)


class ContactCipher:
    """AES-256-GCM with the deployment's contact key; the associated data names the wave (its
    uid: a wave deleted and created again does not read the old one's) and the ticket."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the contact key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    @staticmethod
    def associated(wave: str, uid: str, stamp: str, purpose: str = "contact") -> bytes:
        """A ticket is named by its stamp (random, 48 bits, checked against its record): a
        ciphertext opens only for the ticket, the wave and the purpose it was sealed for."""
        return f"gelombang/{purpose}\x00{wave}\x00{uid}\x00{stamp}".encode()

    def seal(self, plaintext: bytes, associated: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        return b64url(nonce + self._aead.encrypt(nonce, plaintext, associated))

    def open(self, sealed: str, associated: bytes) -> bytes | None:
        """The plaintext, or None for a ciphertext that is not this ticket's (or was altered)."""
        try:
            raw = _b64decode(sealed)
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)
        except (InvalidTag, ValueError, binascii.Error):
            return None


class ReturnCodes:
    """The return link's code: keyed BLAKE2b of the ticket (deterministic, so a message sent
    again after a retry carries the link that still works), its hash stored with the ticket."""

    def __init__(self, secret: bytes) -> None:
        self._mac = hashlib.blake2b(key=subkey(secret, b"return"), digest_size=RETURN_CODE_BYTES)

    def code(self, wave: str, uid: str, stamp: str) -> str:
        mac = self._mac.copy()
        mac.update(f"{wave}\x00{uid}\x00{stamp}".encode())
        return b64url(mac.digest())

    @staticmethod
    def digest(code: str) -> tuple[str, int]:
        """(the hash Redis keeps, its bucket)."""
        digest = hashlib.sha256(code.encode()).digest()
        return b64url(digest[:18]), int.from_bytes(digest[:4], "big") % RETURN_BUCKETS

    @staticmethod
    def well_formed(code: str) -> bool:
        return (
            len(code) == RETURN_CODE_CHARS
            and code.isascii()
            and code.replace("-", "").replace("_", "").isalnum()
        )


def load_or_create_key(configured: str | None, path: Path, what: str) -> bytes:
    """A deployment key: the configured one (base64, 32 bytes), else a development key kept
    at `path` (created once, mode 0600)."""
    if configured:
        try:
            key = base64.b64decode(configured.strip(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise ValueError(f"{what} must be {KEY_BYTES} bytes, base64-encoded")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
        log.warning("generated a development %s at %s", what, path)
    return base64.b64decode(path.read_text().strip())
