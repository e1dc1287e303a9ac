"""The public admission ledger: what the queue decided, in order, in a hash chain
(docs/audit.md has the format for anyone re-implementing the check).

The Redis scripts append one canonical line per entry, atomically with the decision it records
(lua/_lib.lua: ledger_append): the ledger's first entry (`genesis`: the wave and the draw's
commitment), the admission settings in force (`config`, by the first step that uses them), the
pre-queue draw (`draw`: its size and the revealed seed), and one `ticket` entry per place in
admission order that the cursor decided (admitted, or skipped with a reason). Lines never change
once written. The chain is

    hash[i] = SHA-256(hash[i-1] || line[i])      hash[-1] = 32 zero bytes

computed here (Redis scripts have no SHA-256) and stored (`Ledger.seal`): the head, and a
checkpoint after every full page of PAGE_SIZE entries. A page is served with the hashes of its
entries computed from the stored checkpoint before it, so an entry changed in Redis after it was
sealed breaks the served chain where the next page (or the head) begins. The head is signed with
the service's admission key, so a head once published binds the service to everything before it.

No entry holds personal data: ticket numbers, times, reasons and settings only.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from queue_service.store import Store
from queue_service.tokens import ALGORITHM, KeyRing

log = logging.getLogger(__name__)

VERSION = "1"
PAGE_SIZE = 1000
"""Entries per page: full pages (from a multiple of it, this many) never change."""
GENESIS_PREV = bytes(32)
SEAL_BATCH = 5000
"""Entries hashed per seal round trip."""
HEAD_TYPE = "gelombang-ledger-head"
"""The `typ` of a signed head: it is no admission token (those need aud, sub, exp)."""
HEAD_CACHE_S = 1.0
FULL_PAGE_CACHE = 256
"""Full pages kept per process (immutable: a CDN or a newsroom's readers ask for the same)."""
INTEGER_FIELDS = frozenset({"order", "seq", "prequeue", "max_active", "quota", "until"})
NUMBER_FIELDS = frozenset({"admit_rate", "admit_burst"})
KINDS = ("genesis", "config", "draw", "ticket", "state", "return", "carry")
"""The kinds this version writes; readers keep (and hash) any other kind they meet. 'return'
(call-backs, docs/callbacks.md): how a place decided 'called' ended: admitted when its holder
came back, or skipped (not_returned, left). 'carry' (carry-over): a verified holder carried over
from an ended wave into this one's pre-queue (seq, from, order there, place = ahead | prequeue);
those ahead lead the draw."""
# An entry's outcome: admitted, skipped or called ('called', call-backs: the line reached a
# holder who was away; a later 'return' entry says what became of the place).
SKIP_REASONS = ("abandoned", "left", "not_returned")
"""The reasons this version writes; the set is open: later versions add to it."""


class LedgerLineError(ValueError):
    """A line that is not `<version> <position> <kind> <at ms> name=value ...`."""


@dataclass(frozen=True, slots=True)
class Entry:
    position: int
    kind: str
    at_ms: int
    fields: dict[str, str]
    """Name -> value as written, in the line's order."""
    line: str


def parse_line(line: str) -> Entry:
    parts = line.split(" ")
    if len(parts) < 4 or parts[0] != VERSION:
        raise LedgerLineError(f"not a version {VERSION} ledger line: {line!r}")
    _version, position, kind, at_ms, *pairs = parts
    if not (position.isdigit() and at_ms.isdigit() and kind.isidentifier()):
        raise LedgerLineError(f"malformed ledger line: {line!r}")
    fields: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or "=" in value or name in fields:
            raise LedgerLineError(f"malformed field {pair!r} in ledger line: {line!r}")
        fields[name] = value
    return Entry(int(position), kind, int(at_ms), fields, line)


def chain_hash(previous: bytes, line: str) -> bytes:
    return hashlib.sha256(previous + line.encode()).digest()


def typed(name: str, value: str) -> Any:
    """A field's value as JSON shows it: whole numbers and numbers where the format says so."""
    try:
        if name in INTEGER_FIELDS:
            return int(value)
        if name in NUMBER_FIELDS:
            return float(value)
    except ValueError:
        pass
    return value


def entry_json(entry: Entry, digest: bytes) -> dict[str, Any]:
    return {
        "position": entry.position,
        "kind": entry.kind,
        "at_ms": entry.at_ms,
        "fields": {name: typed(name, value) for name, value in entry.fields.items()},
        "line": entry.line,
        "hash": digest.hex(),
    }


def chain_of(previous: bytes, lines: list[str]) -> list[bytes]:
    digests = []
    for line in lines:
        previous = chain_hash(previous, line)
        digests.append(previous)
    return digests


@dataclass(frozen=True, slots=True)
class Head:
    count: int
    hash: str
    """Hex chain hash after entry count-1 (the zero hash for an empty ledger)."""


async def seal(store: Store, wave: str) -> Head:
    """Store the chain up to the ledger's end (every process may; one write wins each range):
    run by the admission loop about every second while a ledger grows, and by any read that
    needs it. Returns the stored head."""
    while True:
        sealed, head_hex, checkpoints, lines, length = await store.ledger_unsealed(wave, SEAL_BATCH)
        if not lines:
            return Head(sealed, head_hex or GENESIS_PREV.hex())
        if checkpoints != sealed // PAGE_SIZE:
            log.error("wave %s: ledger checkpoints (%d) disagree with sealed %d", wave,
                      checkpoints, sealed)  # fmt: skip
        previous = bytes.fromhex(head_hex) if head_hex else GENESIS_PREV
        digests = chain_of(previous, lines)
        pages_done = [
            digest.hex()
            for position, digest in enumerate(digests, start=sealed)
            if (position + 1) % PAGE_SIZE == 0
        ]
        _, stored_sealed, stored_head = await store.ledger_store_seal(
            wave, sealed, sealed + len(lines), digests[-1].hex(), pages_done
        )
        if stored_sealed >= length:
            return Head(stored_sealed, stored_head)


class Ledger:
    """Seals, pages and heads of every wave's ledger, for one process."""

    def __init__(self, store: Store, keyring: KeyRing) -> None:
        self._store = store
        self._keyring = keyring
        self._pages: OrderedDict[tuple[str, str, int, int], dict[str, Any]] = OrderedDict()
        self._heads: dict[str, tuple[float, str, dict[str, Any]]] = {}
        """Wave -> (when, wave uid, signed head)."""
        self._sealed: dict[str, int] = {}
        """Wave -> the sealed count this process last saw."""

    def sealed_count(self, wave: str) -> int:
        return self._sealed.get(wave, 0)

    async def seal(self, wave: str) -> Head:
        head = await seal(self._store, wave)
        self._sealed[wave] = head.count
        return head

    async def page(self, wave: str, uid: str, start: int, limit: int) -> dict[str, Any]:
        """Entries start..start+limit-1 (fewer at the end), each with its chain hash, and the
        hash before the first (`prev`). A full page is cached: it never changes."""
        cache_key = (wave, uid, start, limit)
        cached = self._pages.get(cache_key)
        if cached is not None:
            self._pages.move_to_end(cache_key)
            return cached
        base = start - start % PAGE_SIZE
        checkpoint = base // PAGE_SIZE - 1
        stop = start + limit - 1
        lines, stored, length = await self._store.ledger_lines(wave, base, stop, checkpoint)
        if checkpoint >= 0 and stored is None and length > base:
            await self.seal(wave)  # this process got here before any sealer
            lines, stored, length = await self._store.ledger_lines(wave, base, stop, checkpoint)
        if start >= length > 0:  # past the end: no entries; `prev` is the chain's end
            head = await self.seal(wave)
            return self._body(wave, start, limit, length, bytes.fromhex(head.hash), [])
        previous = bytes.fromhex(stored) if stored else GENESIS_PREV
        digests = chain_of(previous, lines)
        skip = start - base
        before = digests[skip - 1] if skip > 0 else previous
        entries = []
        for line, digest in zip(lines[skip:], digests[skip:], strict=True):
            try:
                entries.append(entry_json(parse_line(line), digest))
            except LedgerLineError:
                # served as it is: the auditor's check fails on it, visibly
                log.error("wave %s: malformed ledger line %r", wave, line)
                entries.append({"line": line, "hash": digest.hex()})
        body = self._body(wave, start, limit, length, before, entries)
        if body["complete"]:
            self._pages[cache_key] = body
            while len(self._pages) > FULL_PAGE_CACHE:
                self._pages.popitem(last=False)
        return body

    @staticmethod
    def _body(
        wave: str,
        start: int,
        limit: int,
        length: int,
        before: bytes,
        entries: list[dict[str, Any]],
    ) -> dict[str, Any]:
        count = len(entries)
        return {
            "wave": wave,
            "from": start,
            "limit": limit,
            "page_size": PAGE_SIZE,
            "total": length,
            "prev": before.hex(),
            "entries": entries,
            "next": start + count if start + count < length else None,
            "complete": count == limit,
        }

    async def head(self, wave: str, uid: str) -> dict[str, Any]:
        """The chain's head now, signed (a compact JWS, EdDSA, `kid` from the JWKS)."""
        cached = self._heads.get(wave)
        now = time.monotonic()
        if cached is not None and now - cached[0] < HEAD_CACHE_S and cached[1] == uid:
            return cached[2]
        head = await self.seal(wave)
        signed_at = int(time.time())
        claims = {"wave": wave, "count": head.count, "hash": head.hash, "iat": signed_at}
        signature = jwt.encode(
            claims,
            self._keyring.signing_key,
            algorithm=ALGORITHM,
            headers={"kid": self._keyring.signing_kid, "typ": HEAD_TYPE},
        )
        body: dict[str, Any] = {
            "wave": wave,
            "count": head.count,
            "hash": head.hash,
            "signed_at": signed_at,
            "signature": signature,
        }
        self._heads[wave] = (now, uid, body)
        return body
