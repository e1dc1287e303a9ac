"""The pre-queue draw: a committed seed, and an order anyone can recompute (docs/audit.md).

At a wave's creation the service picks a secret 32-byte seed and publishes its SHA-256 (the
commitment) in the wave's public info and in the first entry of its admission ledger. At the
opening the pre-queue is frozen (N tickets, numbers 1..N) and ordered by

    key(seq) = HMAC-SHA256(seed, "<wave>:<N>:<seq>")      (ASCII, seq and N in decimal)

ascending as 256-bit big-endian integers, ties (never seen in practice) by seq ascending. The
seed is then revealed. Tickets carried over ahead of everyone from an earlier wave (the ledger's
`carry` entries with place=ahead, written before the draw) come first, in their listed order;
the draw orders the rest. N is part of the message so that nobody, an operator who can read the
seed included, can tell which ticket numbers will be drawn early until the pre-queue has closed.

This module has no I/O: the service draws with it at the opening (admission.py) and the
auditor (audit.py) recomputes with it. Tests check it against a separate few-line version.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator, Sequence

SEED_BYTES = 32
HEX_DIGITS = 2 * hashlib.sha256().digest_size
_BLOCK = 64  # SHA-256's block size: HMAC pads the key to it


def new_seed() -> str:
    """A fresh secret seed, hex."""
    return secrets.token_hex(SEED_BYTES)


def is_hex_digest(text: str) -> bool:
    return len(text) == HEX_DIGITS and all(c in "0123456789abcdef" for c in text)


def commitment(seed_hex: str) -> str:
    """SHA-256 of the seed's 32 bytes, hex: published before the pre-queue opens."""
    return hashlib.sha256(bytes.fromhex(seed_hex)).hexdigest()


def draw_keys(seed_hex: str, wave: str, prequeue_size: int) -> Iterator[tuple[bytes, int]]:
    """(HMAC-SHA256(seed, "<wave>:<N>:<seq>"), seq) for seq = 1..N. HMAC computed with the
    key's padded blocks hashed once (what `hmac` does per call, at a third of the cost: a
    pre-queue of millions is drawn while everyone waits for the opening)."""
    key = bytes.fromhex(seed_hex).ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    prefix = f"{wave}:{prequeue_size}:".encode()
    for seq in range(1, prequeue_size + 1):
        first = inner.copy()
        first.update(prefix + str(seq).encode())
        second = outer.copy()
        second.update(first.digest())
        yield second.digest(), seq


def draw_order(
    seed_hex: str, wave: str, prequeue_size: int, first: Sequence[int] = ()
) -> list[int]:
    """The pre-queue's ticket numbers in admission order. `first`: tickets carried over from
    an earlier wave ahead of everyone (call-backs, docs/callbacks.md), in the order the ledger's
    `carry` entries list them; they lead, and the draw orders the rest."""
    leading = [seq for seq in first if 1 <= seq <= prequeue_size]
    taken = set(leading)
    drawn = [seq for _, seq in sorted(draw_keys(seed_hex, wave, prequeue_size))]
    return leading + [seq for seq in drawn if seq not in taken]


def draw_key_of(seed_hex: str, wave: str, prequeue_size: int, seq: int) -> str:
    """One ticket's key, hex (for a person checking their own ticket by hand)."""
    message = f"{wave}:{prequeue_size}:{seq}".encode()
    return hmac.new(bytes.fromhex(seed_hex), message, hashlib.sha256).hexdigest()
