"""The audit of a wave from public data alone: its info, its ledger pages and the signed head
(`gelombang audit`, commands/audit.py, downloads them). No I/O here, so the same checks run on
a download kept for the record, years later. docs/audit.md states each check.

Checks, each passed or failed with the first offending entry:
- chain: every line hashes onto the one before (SHA-256), pages join up, positions count 0, 1,
  2, ..., and the fields the JSON shows are the line's;
- head: the signed head names the last entry's hash, and its signature verifies with the JWKS;
- commitment: SHA-256 of the revealed seed is the commitment in the ledger's first entry, in
  the wave info, and the one the auditor saved before the opening (when given);
- draw: the pre-queue tickets were admitted or skipped in the order the seed gives (after the
  tickets carried over ahead of everyone from an earlier wave, which the ledger lists first);
- order: after the pre-queue, ticket n+1 is decided at place n (first in, first out); every
  place is decided once, skipped places say why;
- outflow: a token bucket replayed with the admission settings in force over time (the config
  entries) never runs dry: admissions over any W seconds <= admit_rate * W + admit_burst;
- quota: admissions never exceed the quota in force;
- returns (call-backs): every 'return' entry closes a place decided 'called' before it, once,
  and an admitted return came by the time the called entry named (`until`) or soon after (an
  outage extends a window; more than RETURN_LATE_WARN_MS late is a warning, not a failure).
Admissions on return count toward outflow and quota like any other.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from queue_service import draw
from queue_service.ledger import (
    GENESIS_PREV,
    HEAD_TYPE,
    SKIP_REASONS,
    LedgerLineError,
    chain_hash,
    parse_line,
    typed,
)
from queue_service.tokens import ALGORITHM, TokenVerifier

TOKEN_TOLERANCE = 0.01
"""Slack of the outflow replay: the bucket is stored to 6 decimals at every step."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class AuditReport:
    wave: str
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def add(self, name: str, problems: Sequence[str], passed: str) -> None:
        self.checks.append(Check(name, not problems, problems[0] if problems else passed))

    def as_json(self) -> dict[str, Any]:
        return {
            "wave": self.wave,
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "warnings": self.warnings,
            "stats": self.stats,
        }


@dataclass
class _Entries:
    """The ledger as lines, parsed, with what the chain check learnt."""

    lines: list[str] = field(default_factory=list)
    parsed: list[Any] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)


def audit(
    wave: str,
    info: Mapping[str, Any],
    pages: Sequence[Mapping[str, Any]],
    head: Mapping[str, Any] | None = None,
    jwks: Mapping[str, Any] | None = None,
    saved_commitment: str | None = None,
) -> AuditReport:
    """Check a wave's public record. `pages`: the ledger pages as served, in order from
    position 0; `head`: the signed head read before them (entries after it are ignored);
    `saved_commitment`: the commitment the auditor recorded before the opening."""
    report = AuditReport(wave)
    entries = _check_chain(report, pages, head)
    _check_head(report, entries, head, jwks, wave)
    if not entries.parsed:
        report.add("genesis", ["the ledger is empty"], "")
        return report
    prequeue, seed = _check_commitment(report, entries, info, wave, saved_commitment)
    tickets = [e for e in entries.parsed if e.kind == "ticket"]
    _check_order(report, tickets, prequeue, seed, wave, _carried_ahead(entries.parsed))
    _check_outflow_and_quota(report, entries.parsed)
    _check_returns(report, entries.parsed)
    reasons = Counter(
        e.fields.get("reason", "?") for e in tickets if e.fields.get("outcome") == "skipped"
    )
    unknown = sorted(set(reasons) - set(SKIP_REASONS))
    if unknown:
        report.warnings.append(
            f"skips with reasons this auditor does not know: {', '.join(unknown)} (listed, "
            "so FIFO holds; read docs/audit.md of the service's version)"
        )
    times = [e.at_ms for e in entries.parsed]
    if any(later < earlier for earlier, later in itertools.pairwise(times)):
        report.warnings.append("entry times go back somewhere (the server clock stepped back)")
    report.stats = {
        "entries": len(entries.parsed),
        "prequeue": prequeue,
        "decided": len(tickets),
        "admitted": sum(
            1
            for e in entries.parsed
            if e.kind in ("ticket", "return") and e.fields.get("outcome") == "admitted"
        ),
        "called": sum(1 for e in tickets if e.fields.get("outcome") == "called"),
        "skipped": dict(sorted(reasons.items())),
        "config_changes": sum(1 for e in entries.parsed if e.kind == "config"),
        "states": [
            f"{e.fields.get('state')}@{e.at_ms}" for e in entries.parsed if e.kind == "state"
        ],
        "head": entries.hashes[-1].hex() if entries.hashes else GENESIS_PREV.hex(),
    }
    return report


def _check_chain(
    report: AuditReport, pages: Sequence[Mapping[str, Any]], head: Mapping[str, Any] | None
) -> _Entries:
    entries = _Entries()
    problems: list[str] = []
    limit = int(head["count"]) if head is not None else None
    previous = GENESIS_PREV
    for page in pages:
        if page.get("prev") != previous.hex() and len(entries.lines) == int(page.get("from", -1)):
            problems.append(
                f"the page from {page.get('from')} says the entry before it hashed to "
                f"{page.get('prev')}, the previous page ends at {previous.hex()}"
            )
        for item in page.get("entries", []):
            if limit is not None and len(entries.lines) >= limit:
                break
            position = len(entries.lines)
            line = str(item.get("line", ""))
            digest = chain_hash(previous, line)
            if item.get("hash") != digest.hex():
                problems.append(f"entry {position}: its hash is not SHA-256(previous || line)")
            try:
                entry = parse_line(line)
            except LedgerLineError as exc:
                problems.append(f"entry {position}: {exc}")
                entry = None
            if entry is not None:
                if entry.position != position:
                    problems.append(
                        f"entry {position} says it is entry {entry.position} (dropped or moved)"
                    )
                shown = {name: typed(name, value) for name, value in entry.fields.items()}
                if (item.get("position"), item.get("kind"), item.get("at_ms")) != (
                    entry.position, entry.kind, entry.at_ms,
                ) or item.get("fields") != shown:  # fmt: skip
                    problems.append(f"entry {position}: its JSON fields differ from its line")
            entries.lines.append(line)
            entries.parsed.append(entry)
            entries.hashes.append(digest)
            previous = digest
    if limit is not None and len(entries.lines) < limit:
        problems.append(f"the head counts {limit} entries, the pages hold {len(entries.lines)}")
    report.add("chain", problems, f"{len(entries.lines)} entries hash onto each other")
    entries.parsed = [e for e in entries.parsed if e is not None]
    return entries


def _check_head(
    report: AuditReport,
    entries: _Entries,
    head: Mapping[str, Any] | None,
    jwks: Mapping[str, Any] | None,
    wave: str,
) -> None:
    if head is None:
        report.warnings.append("no signed head given: the chain is checked within itself only")
        return
    problems = []
    count = int(head["count"])
    last = entries.hashes[count - 1].hex() if 0 < count <= len(entries.hashes) else None
    expected = last if count else GENESIS_PREV.hex()
    if head.get("hash") != expected:
        problems.append(f"the head says entry {count - 1} hashes to {head.get('hash')}, not "
                        f"{expected}")  # fmt: skip
    if jwks is not None:
        problems += _head_signature_problems(head, jwks, wave)
    else:
        report.warnings.append("no JWKS given: the head's signature was not checked")
    report.add("head", problems, f"signed head of {count} entries matches")


def _head_signature_problems(
    head: Mapping[str, Any], jwks: Mapping[str, Any], wave: str
) -> list[str]:
    token = str(head.get("signature", ""))
    try:
        header = jwt.get_unverified_header(token)
        keys = TokenVerifier.from_jwks(jwks).public_keys
        key = keys.get(str(header.get("kid")))
        if key is None or header.get("typ") != HEAD_TYPE:
            return ["the head is not signed by a key of the JWKS"]
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], options={"verify_aud": False})
    except (jwt.PyJWTError, ValueError) as exc:
        return [f"the head's signature does not verify: {exc}"]
    signed = (claims.get("wave"), claims.get("count"), claims.get("hash"))
    if signed != (wave, head.get("count"), head.get("hash")):
        return ["the head's signature covers another wave, count or hash"]
    return []


def _check_commitment(
    report: AuditReport,
    entries: _Entries,
    info: Mapping[str, Any],
    wave: str,
    saved: str | None,
) -> tuple[int | None, str | None]:
    """(pre-queue size, seed) once drawn, else (None, None)."""
    genesis = entries.parsed[0]
    problems = []
    if genesis.kind != "genesis" or genesis.fields.get("wave") != wave:
        report.add("genesis", [f"entry 0 is not this wave's genesis: {genesis.line}"], "")
        return None, None
    report.add("genesis", [], f"entry 0 opens the ledger of wave {wave}")
    committed = genesis.fields.get("commitment", "")
    published = (info.get("draw") or {}).get("commitment")
    if not draw.is_hex_digest(committed):
        problems.append("the ledger opened with no commitment: the draw cannot be proven")
    if published != committed:
        problems.append(f"the wave info's commitment {published} differs from the ledger's")
    if saved is not None and saved.lower() != committed:
        problems.append(f"the commitment you saved ({saved}) is not the ledger's ({committed})")
    draws = [e for e in entries.parsed if e.kind == "draw"]
    if not draws:
        report.add("commitment", problems, f"committed to {committed}; not drawn yet: save it "
                   "now and pass it with --commitment after the opening")  # fmt: skip
        return None, None
    entry = draws[0]
    seed = entry.fields.get("seed", "")
    prequeue = int(entry.fields.get("prequeue", "0"))
    if len(draws) > 1:
        problems.append("the ledger holds more than one draw")
    if not (len(seed) == 2 * draw.SEED_BYTES and draw.is_hex_digest(seed)):
        problems.append(f"the draw revealed no seed ({seed!r}): its order cannot be checked")
        report.add("commitment", problems, "")
        return prequeue, None
    if hashlib.sha256(bytes.fromhex(seed)).hexdigest() != committed:
        problems.append("SHA-256 of the revealed seed is not the commitment")
    if (info.get("draw") or {}).get("seed") not in (None, seed):
        problems.append("the wave info reveals another seed than the ledger")
    report.add("commitment", problems, f"SHA-256(seed) = {committed}")
    return prequeue, seed


def _carried_ahead(parsed: list[Any]) -> list[int]:
    """Tickets carried over ahead of everyone (call-backs): the `carry` entries with
    place=ahead written before the draw, in order; the draw puts them first (draw.py)."""
    first: list[int] = []
    for entry in parsed:
        if entry.kind == "draw":
            break
        if entry.kind == "carry" and entry.fields.get("place") == "ahead":
            try:
                first.append(int(entry.fields["seq"]))
            except (KeyError, ValueError):
                continue
    return first


def _check_order(
    report: AuditReport,
    tickets: list[Any],
    prequeue: int | None,
    seed: str | None,
    wave: str,
    first: Sequence[int] = (),
) -> None:
    order_problems: list[str] = []
    draw_problems: list[str] = []
    drawn = draw.draw_order(seed, wave, prequeue, first) if seed and prequeue is not None else None
    seen: set[int] = set()
    for expected_order, entry in enumerate(tickets):
        try:
            place, seq = int(entry.fields["order"]), int(entry.fields["seq"])
        except (KeyError, ValueError):
            order_problems.append(f"entry {entry.position}: a ticket entry without order or seq")
            continue
        outcome, reason = entry.fields.get("outcome"), entry.fields.get("reason")
        if place != expected_order:
            order_problems.append(
                f"entry {entry.position}: place {place} decided where place {expected_order} "
                "was due (a place missing, repeated or moved)"
            )
        if seq in seen:
            order_problems.append(f"entry {entry.position}: ticket {seq} decided twice")
        seen.add(seq)
        if outcome not in ("admitted", "skipped", "called") or (
            outcome == "skipped" and not reason
        ):
            order_problems.append(f"entry {entry.position}: neither admitted nor a listed skip")
        if prequeue is None:
            order_problems.append(f"entry {entry.position}: a ticket decided before the draw")
            continue
        in_prequeue = place < prequeue
        if entry.fields.get("from") != ("prequeue" if in_prequeue else "line"):
            order_problems.append(f"entry {entry.position}: 'from' is wrong for place {place}")
        if not in_prequeue and seq != place + 1:
            order_problems.append(
                f"entry {entry.position}: ticket {seq} at place {place}: after the pre-queue "
                f"place {place} belongs to ticket {place + 1} (first in, first out)"
            )
        if in_prequeue and drawn is not None and seq != drawn[place]:
            draw_problems.append(
                f"entry {entry.position}: ticket {seq} at pre-queue place {place}; the draw "
                f"puts ticket {drawn[place]} there"
            )
    if prequeue is not None:
        if drawn is None and prequeue:
            draw_problems.append("no seed was revealed: the pre-queue's order is unproven")
        report.add("draw", draw_problems, f"{min(prequeue, len(tickets))} pre-queue places "
                   f"follow the seed (pre-queue of {prequeue})")  # fmt: skip
    report.add("order", order_problems, f"{len(tickets)} places decided in order; after the "
               "pre-queue first in, first out, skips listed with reasons")  # fmt: skip


def _check_outflow_and_quota(report: AuditReport, parsed: list[Any]) -> None:
    outflow: list[str] = []
    quota_problems: list[str] = []
    rate = burst = 0.0
    quota = 0
    tokens: float | None = None
    at = 0
    admitted = 0
    for entry in parsed:
        if entry.kind == "config":
            try:
                new_rate = float(entry.fields["admit_rate"])
                new_burst = float(entry.fields["admit_burst"])
                quota = int(entry.fields["quota"])
            except (KeyError, ValueError):
                outflow.append(f"entry {entry.position}: a config entry without its settings")
                continue
            if tokens is None:
                tokens = new_burst  # the bucket starts full
            else:
                # a step may have refilled at the new rate since the step before the change:
                # bound it with the higher of the two
                gap = max(0, entry.at_ms - at) / 1000
                tokens = min(new_burst, tokens + gap * max(rate, new_rate))
            rate, burst, at = new_rate, new_burst, entry.at_ms
        elif entry.kind in ("ticket", "return") and entry.fields.get("outcome") == "admitted":
            if tokens is None:
                outflow.append(f"entry {entry.position}: an admission before any settings")
                continue
            tokens = min(burst, tokens + max(0, entry.at_ms - at) / 1000 * rate)
            at = max(at, entry.at_ms)
            if tokens < 1 - TOKEN_TOLERANCE:
                outflow.append(
                    f"entry {entry.position}: admitted at {entry.at_ms} ms with "
                    f"{tokens:.3f} admissions' worth of allowance left (admit_rate {rate:g}/s, "
                    f"burst {burst:g})"
                )
            tokens -= 1
            if quota and admitted >= quota:
                quota_problems.append(
                    f"entry {entry.position}: admission {admitted + 1} beyond the quota {quota}"
                )
            admitted += 1
    report.add("outflow", outflow, "admissions never outran admit_rate x time + burst, with "
               "the settings in force at each moment")  # fmt: skip
    report.add("quota", quota_problems, f"{admitted} admitted within the quota in force")


RETURN_LATE_WARN_MS = 60_000


def _check_returns(report: AuditReport, parsed: list[Any]) -> None:
    """Call-backs: each place decided 'called' is closed at most once, by a later 'return'."""
    problems: list[str] = []
    called: dict[int, int] = {}
    closed: set[int] = set()
    late = 0
    for entry in parsed:
        try:
            seq = int(entry.fields.get("seq", "-1"))
        except ValueError:
            seq = -1
        if entry.kind == "ticket" and entry.fields.get("outcome") == "called":
            called[seq] = int(entry.fields.get("until", "0") or 0)
        elif entry.kind == "return":
            if seq not in called:
                problems.append(f"entry {entry.position}: ticket {seq} returns but was not called")
            elif seq in closed:
                problems.append(f"entry {entry.position}: ticket {seq} returns twice")
            elif entry.fields.get("outcome") == "admitted":
                if called[seq] and entry.at_ms > called[seq] + RETURN_LATE_WARN_MS:
                    late += 1
            elif entry.fields.get("outcome") != "skipped" or not entry.fields.get("reason"):
                problems.append(f"entry {entry.position}: a return neither admitted nor skipped")
            closed.add(seq)
    if late:
        report.warnings.append(
            f"{late} holders admitted on return more than a minute after their window (an "
            "outage extends windows; a long one shows here)"
        )
    report.add("returns", problems, f"{len(called)} called back, {len(closed)} of them "
               "decided since (admitted on return or skipped)")  # fmt: skip
