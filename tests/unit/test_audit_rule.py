"""docs/audit.md's rule and test vectors are what the code does: an auditor re-implementing
the document gets the service's draw and chain."""

from __future__ import annotations

import re

from queue_service import draw, ledger
from tests.helpers.paths import REPO

DOC = (REPO / "docs" / "audit.md").read_text()


def vector(label: str) -> str:
    match = re.search(rf"{re.escape(label)}:? `([^`]+)`", DOC)
    assert match, label
    return match.group(1)


def test_the_documented_draw_vectors_are_the_codes() -> None:
    seed = vector("Seed")
    assert draw.commitment(seed) == vector("commitment")
    for seq in range(1, 6):
        assert draw.draw_key_of(seed, "contoh", 5, seq) == vector(f"key({seq}) =")
    assert str(draw.draw_order(seed, "contoh", 5)) == vector("order")


def test_the_documented_chain_is_the_codes() -> None:
    rows = re.findall(r"^\| `(1 \d [^`]+)` \| `([0-9a-f]{64})` \|$", DOC, flags=re.MULTILINE)
    assert len(rows) == 4
    previous = ledger.GENESIS_PREV
    for line, expected in rows:
        entry = ledger.parse_line(line)
        assert entry.line == line
        previous = ledger.chain_hash(previous, line)
        assert previous.hex() == expected


def test_a_large_prequeue_is_drawn_quickly_and_as_the_plain_rule_says() -> None:
    import hashlib
    import hmac
    import time

    seed = draw.new_seed()
    started = time.perf_counter()
    order = draw.draw_order(seed, "besar", 50_000)
    assert time.perf_counter() - started < 5  # ~1.5 s per million on this machine
    key = bytes.fromhex(seed)
    for seq in (1, 777, 50_000):
        mac = hmac.new(key, f"besar:50000:{seq}".encode(), hashlib.sha256).hexdigest()
        assert draw.draw_key_of(seed, "besar", 50_000, seq) == mac
    assert sorted(order) == list(range(1, 50_001))
