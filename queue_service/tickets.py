"""Tickets and registrant hashes.

A ticket is `<seq>.<incarnation>.<stamp>.<mac>`: the ticket's number in the wave, the
incarnation of the wave's data that issued it, a random stamp kept in the ticket's record in
Redis (see lua/_lib.lua: a number handed out just before Redis lost its latest writes may be
handed out again, and the stamp tells the two holders apart however the data were rolled
back), and a MAC over (wave, wave uid, incarnation, seq, stamp). So a holder cannot poll,
leave or take the admission of a neighbour's ticket by guessing numbers, a deleted and
re-created wave never accepts the old wave's tickets, and any replica can check a ticket
without a Redis lookup.
Registrant ids are stored only as a keyed hash, per wave, so the same person cannot be linked
across waves.

Both are keyed BLAKE2b (its built-in MAC mode, a keyed PRF like HMAC), with a key derived per
purpose from the service secret: a third of the cost of HMAC-SHA256 on the hot path.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import os
from typing import NamedTuple

from queue_service.errors import Unauthorized
from queue_service.keys import REGISTRANT_BUCKETS

MAC_BYTES = 12
REGISTRANT_HASH_BYTES = 16
STAMP_BYTES = 6
"""Random bytes of a ticket's stamp (8 url-safe characters)."""
MAX_TICKET_LENGTH = 64
MAX_SEQ_DIGITS = 15
URL_SAFE = bytes.maketrans(b"+/", b"-_")
URL_SAFE_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def b64url(data: bytes) -> str:
    """Unpadded url-safe base64 (what base64.urlsafe_b64encode gives, at half the cost)."""
    return binascii.b2a_base64(data, newline=False).translate(URL_SAFE).rstrip(b"=").decode()


def subkey(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, b"gelombang/" + purpose, hashlib.sha256).digest()


class Ticket(NamedTuple):
    seq: int
    incarnation: str
    stamp: str


def new_stamps(count: int) -> list[str]:
    """Random stamps for `count` new tickets: one read of the OS's CSPRNG per batch."""
    raw = os.urandom(STAMP_BYTES * count)
    return [b64url(raw[i : i + STAMP_BYTES]) for i in range(0, len(raw), STAMP_BYTES)]


def _invalid() -> Unauthorized:
    return Unauthorized("The ticket is not valid for this wave.", code="invalid_ticket")


VERIFIED_CACHE_SIZE = 16_384
"""Tickets recently found valid by a status poll, kept per process: a holder near the front
polls every second or so, and a dict look-up costs less than a MAC. Only valid tickets are
kept, so a forger gains nothing; bounded at about 4 MB (a process's memory stays flat over a
long wave: loadtests/RESULTS.md); tickets checked once (a leave, a join's proof) are not
cached (`check`)."""


class TicketCodec:
    def __init__(self, secret: bytes) -> None:
        # keyed once; each use copies the prepared state
        self._ticket_mac = hashlib.blake2b(key=subkey(secret, b"ticket"), digest_size=MAC_BYTES)
        self._registrant_mac = hashlib.blake2b(
            key=subkey(secret, b"registrant"), digest_size=REGISTRANT_HASH_BYTES
        )
        self.decode = functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)(self._decode)  # type: ignore[method-assign]

    def registrant_hash(self, wave: str, registrant: str) -> tuple[str, int]:
        """(keyed hash as 22 url-safe characters, its Redis bucket)."""
        mac = self._registrant_mac.copy()
        mac.update(f"{wave}\x00{registrant}".encode())
        digest = mac.digest()
        return b64url(digest), int.from_bytes(digest[:4], "big") % REGISTRANT_BUCKETS

    def _mac(self, wave: str, uid: str, incarnation: str, seq: int, stamp: str) -> str:
        mac = self._ticket_mac.copy()
        mac.update(f"{wave}\x00{uid}\x00{incarnation}\x00{seq}\x00{stamp}".encode())
        return b64url(mac.digest())

    def encode(self, wave: str, uid: str, ticket: Ticket) -> str:
        seq, incarnation, stamp = ticket
        return f"{seq}.{incarnation}.{stamp}.{self._mac(wave, uid, incarnation, seq, stamp)}"

    def decode(self, wave: str, uid: str, text: str) -> Ticket:
        """The ticket, or Unauthorized for anything not issued by us for this wave. Any text a
        client sends is checked for shape before it reaches the MAC (non-ASCII included).
        Cached: for tickets that come back (status polls)."""
        return self._decode(wave, uid, text)  # replaced by its cached form in __init__

    def check(self, wave: str, uid: str, text: str) -> Ticket:
        """`decode`, not cached: for a ticket presented once (a leave, a join's proof)."""
        return self._decode(wave, uid, text)

    def _decode(self, wave: str, uid: str, text: str) -> Ticket:
        if len(text) > MAX_TICKET_LENGTH:
            raise _invalid()
        parts = text.split(".")
        if len(parts) != 4:
            raise _invalid()
        seq_text, incarnation, stamp, mac = parts
        if not (
            seq_text.isascii()
            and seq_text.isdigit()
            and 0 < len(seq_text) <= MAX_SEQ_DIGITS
            and incarnation
            and URL_SAFE_ALPHABET.issuperset(incarnation)
            and stamp
            and URL_SAFE_ALPHABET.issuperset(stamp)
            and mac.isascii()
        ):
            raise _invalid()
        seq = int(seq_text)
        expected = self._mac(wave, uid, incarnation, seq, stamp)
        if seq < 1 or not hmac.compare_digest(mac, expected):
            raise _invalid()
        return Ticket(seq, incarnation, stamp)
