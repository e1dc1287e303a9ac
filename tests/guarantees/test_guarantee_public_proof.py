"""Guarantee 15: public proof. The pre-queue draw is committed before the opening and revealed
after; the admission ledger is an append-only hash chain with no personal data; anyone can
check the draw, FIFO, outflow and quota from public data alone, and a ledger that was changed,
cut or reordered fails the audit."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gelombang import cli
from queue_service import ledger as ledger_module
from queue_service.audit import audit
from queue_service.clock import ManualClock
from queue_service.http.appkeys import SERVICE
from queue_service.keys import WaveKeys
from queue_service.ledger import GENESIS_PREV, PAGE_SIZE
from tests.helpers.support import ADMIN, T0, admit, join_ok, poll_ok, put_wave

WAVE = "lotre"
PREQUEUE = 9
LATER = 5


def independent_draw(seed_hex: str, wave: str, size: int) -> list[int]:
    """docs/audit.md's rule, written again from the document alone (not with draw.py)."""
    key = bytes.fromhex(seed_hex)

    def rank_key(seq: int) -> tuple[int, int]:
        mac = hmac.new(key, f"{wave}:{size}:{seq}".encode(), hashlib.sha256).digest()
        return int.from_bytes(mac, "big"), seq

    return sorted(range(1, size + 1), key=rank_key)


async def get_json(client: TestClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def download(client: TestClient, wave: str, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """What `gelombang audit` downloads: the info, the signed head, then the pages."""
    info = await get_json(client, f"/api/v1/waves/{wave}")
    head = await get_json(client, f"/api/v1/waves/{wave}/ledger/head")
    pages, start = [], 0
    while start < head["count"]:
        page = await get_json(client, f"/api/v1/waves/{wave}/ledger?from={start}&limit={limit}")
        pages.append(page)
        start += len(page["entries"])
    jwks = await get_json(client, "/.well-known/jwks.json")
    return {"info": info, "head": head, "pages": pages, "jwks": jwks}


def run_audit(record: dict[str, Any], saved: str | None = None) -> Any:
    return audit(WAVE, record["info"], record["pages"], record["head"], record["jwks"], saved)


async def lottery(client: TestClient, clock: ManualClock) -> dict[str, Any]:
    """A wave with a pre-queue: some of it stays, one leaves, two vanish (abandoned); later
    arrivals, one of whom leaves; admitted at 2 a second over several steps."""
    clock.set(T0)
    await put_wave(
        client, WAVE, opens_at=T0 + 60, prequeue_s=120, admit_rate=2, admit_burst=2,
        abandon_after_s=30,
    )  # fmt: skip
    before = await get_json(client, f"/api/v1/waves/{WAVE}")
    clock.set(T0 + 50)
    early = [(await join_ok(client, WAVE, f"awal-{i}"))["ticket"] for i in range(PREQUEUE)]
    left = await client.post(f"/api/v1/waves/{WAVE}/leave", headers={"X-Queue-Ticket": early[0]})
    assert left.status == 204
    clock.set(T0 + 120)  # the pre-queue's poll deadlines (T0 + 50 + a poll + 30 s) have passed
    for ticket in early[3:]:  # early[1] and early[2] never come back
        await poll_ok(client, WAVE, ticket)
    late = [(await join_ok(client, WAVE, f"akhir-{i}"))["ticket"] for i in range(LATER)]
    await client.post(f"/api/v1/waves/{WAVE}/leave", headers={"X-Queue-Ticket": late[1]})
    await client.app[SERVICE].seen.flush()
    for _ in range(12):
        await admit(client, WAVE)
        clock.advance(1)
        for ticket in early[3:] + late:
            await client.get(f"/api/v1/waves/{WAVE}/status", headers={"X-Queue-Ticket": ticket})
        await client.app[SERVICE].seen.flush()
    return {"before": before, **await download(client, WAVE)}


async def test_the_draw_is_committed_before_the_opening_and_anyone_can_recompute_it(
    client: TestClient, clock: ManualClock
) -> None:
    record = await lottery(client, clock)
    before, after = record["before"]["draw"], record["info"]["draw"]
    assert before["seed"] is None and before["drawn_at"] is None
    assert before["commitment"] == after["commitment"]
    seed = after["seed"]
    assert hashlib.sha256(bytes.fromhex(seed)).hexdigest() == before["commitment"]
    assert after["prequeue"] == PREQUEUE
    tickets = [
        e["fields"] for page in record["pages"] for e in page["entries"] if e["kind"] == "ticket"
    ]
    prequeue_order = [t["seq"] for t in tickets if t["from"] == "prequeue"]
    assert prequeue_order == independent_draw(seed, WAVE, PREQUEUE)
    # and the service's own admission order followed it: places are the drawn order
    assert [t["order"] for t in tickets] == list(range(len(tickets)))


async def test_the_ledger_lists_every_decision_with_no_personal_data(
    client: TestClient, clock: ManualClock
) -> None:
    record = await lottery(client, clock)
    entries = [e for page in record["pages"] for e in page["entries"]]
    kinds = [e["kind"] for e in entries]
    assert kinds[:4] == ["genesis", "config", "state", "draw"]  # the first step: at the opening
    states = [e["fields"]["state"] for e in entries if e["kind"] == "state"]
    assert states == ["open"]
    assert entries[1]["fields"] == {
        "admit_rate": 2.0, "admit_burst": 2.0, "max_active": 0, "quota": 0,
    }  # fmt: skip
    tickets = [e["fields"] for e in entries if e["kind"] == "ticket"]
    assert len(tickets) == PREQUEUE + LATER  # everyone was reached
    outcomes = {t["seq"]: (t["outcome"], t.get("reason")) for t in tickets}
    assert outcomes[1] == ("skipped", "left")
    assert outcomes[2] == outcomes[3] == ("skipped", "abandoned")
    assert outcomes[PREQUEUE + 2] == ("skipped", "left")
    admitted = [seq for seq, (outcome, _) in outcomes.items() if outcome == "admitted"]
    assert len(admitted) == PREQUEUE + LATER - 4
    # nothing but numbers, times, reasons and settings: no registrant, ticket MAC or stamp
    names = {name for e in entries for name in e["fields"]}
    assert names <= {
        "wave", "commitment", "admit_rate", "admit_burst", "max_active", "quota", "prequeue",
        "seed", "order", "seq", "from", "outcome", "reason", "state",
    }  # fmt: skip
    text = str(entries)
    for i in range(PREQUEUE):
        assert f"awal-{i}" not in text


async def test_the_audit_passes_on_the_real_record(client: TestClient, clock: ManualClock) -> None:
    record = await lottery(client, clock)
    report = run_audit(record, saved=record["before"]["draw"]["commitment"])
    assert report.ok, report.as_json()
    assert report.stats["admitted"] == PREQUEUE + LATER - 4
    assert report.stats["skipped"] == {"abandoned": 2, "left": 2}
    # small pages join up the same way
    assert run_audit({**record, **await download(client, WAVE, limit=4)}).ok


def entries_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for page in record["pages"] for e in page["entries"]]


def failed(report: Any) -> set[str]:
    return {check.name for check in report.checks if not check.ok}


def rehash(record: dict[str, Any]) -> None:
    """What a forger does next: recompute every hash after a change, so the chain holds."""
    previous = GENESIS_PREV
    for entry in entries_of(record):
        previous = hashlib.sha256(previous + entry["line"].encode()).digest()
        entry["hash"] = previous.hex()


def swap_seqs(entry: dict[str, Any], seq: int) -> None:
    old = entry["fields"]["seq"]
    entry["line"] = entry["line"].replace(f" seq={old} ", f" seq={seq} ")
    entry["fields"]["seq"] = seq


@pytest.mark.parametrize("tampering", ["changed", "dropped", "reordered", "rewritten"])
async def test_a_tampered_ledger_fails_the_audit(
    client: TestClient, clock: ManualClock, tampering: str
) -> None:
    record = await lottery(client, clock)
    forged = copy.deepcopy(record)
    entries = entries_of(forged)
    tickets = [e for e in entries if e["kind"] == "ticket"]
    first_line = next(e for e in tickets if e["fields"]["from"] == "line")
    page = forged["pages"][0]
    if tampering == "changed":  # a skipped ticket turned into an admission
        skip = next(e for e in tickets if e["fields"]["outcome"] == "skipped")
        skip["line"] = skip["line"].split(" outcome=")[0] + " outcome=admitted"
        skip["fields"]["outcome"] = "admitted"
        del skip["fields"]["reason"]
        assert failed(run_audit(forged)) >= {"chain", "head"}
    elif tampering == "dropped":  # an entry taken out
        page["entries"].remove(first_line)
        assert "chain" in failed(run_audit(forged))
    elif tampering == "reordered":  # two entries swapped
        a, b = page["entries"].index(tickets[0]), page["entries"].index(tickets[1])
        page["entries"][a], page["entries"][b] = page["entries"][b], page["entries"][a]
        assert "chain" in failed(run_audit(forged))
    else:  # a friend moved to the front of the line, every hash recomputed, head not re-signed
        swap_seqs(first_line, first_line["fields"]["seq"] + 1)
        rehash(forged)
        assert failed(run_audit(forged)) >= {"head", "order"}
        forged["head"]["hash"] = entries_of(forged)[-1]["hash"]  # a forged head: bad signature
        assert failed(run_audit(forged)) >= {"head", "order"}
    assert run_audit(record).ok  # the genuine record still passes


async def test_an_entry_changed_in_redis_shows_as_a_break_in_what_the_service_serves(
    client: TestClient, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    record = await lottery(client, clock)
    key = WaveKeys(WAVE).ledger
    lines = [line.decode() for line in await redis_client.lrange(key, 0, -1)]
    skipped = next(i for i, line in enumerate(lines) if "reason=abandoned" in line)
    admitted = lines[skipped].replace("outcome=skipped reason=abandoned", "outcome=admitted")
    await redis_client.lset(key, skipped, admitted)
    again = await download(client, WAVE)
    assert any(e["line"] == admitted for e in entries_of(again))  # served as Redis holds it
    # the stored chain (its head, signed before and now) no longer matches what is served
    assert "head" in failed(run_audit(again))
    assert "head" in failed(run_audit({**again, "head": record["head"]}))


async def test_pages_are_cacheable_and_full_pages_never_change(
    client: TestClient, clock: ManualClock
) -> None:
    await lottery(client, clock)
    full = await client.get(f"/api/v1/waves/{WAVE}/ledger?from=0&limit=3")
    assert "immutable" in full.headers["Cache-Control"]
    etag = full.headers["ETag"]
    again = await client.get(
        f"/api/v1/waves/{WAVE}/ledger?from=0&limit=3", headers={"If-None-Match": etag}
    )
    assert again.status == 304
    tail = await client.get(f"/api/v1/waves/{WAVE}/ledger?from=0")
    body = await tail.json()
    assert not body["complete"] and body["next"] is None
    assert tail.headers["Cache-Control"] == "public, max-age=2"
    for bad in ("from=-1", "limit=0", f"limit={PAGE_SIZE + 1}", "from=x"):
        response = await client.get(f"/api/v1/waves/{WAVE}/ledger?{bad}")
        assert response.status == 400, bad
        assert (await response.json())["error"]["code"] == "invalid_query"
    missing = await client.get("/api/v1/waves/nope/ledger")
    assert missing.status == 404
    head = await (await client.get(f"/api/v1/waves/{WAVE}/ledger/head")).json()
    for start in (head["count"], head["count"] + 5, 10**15 - 1):  # past the end: the chain's end
        past = await (await client.get(f"/api/v1/waves/{WAVE}/ledger?from={start}")).json()
        assert past["entries"] == [] and past["prev"] == head["hash"] and past["next"] is None


async def test_rate_changes_are_recorded_and_the_outflow_is_checked_against_them(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, WAVE, admit_rate=1, admit_burst=1)
    tickets = [(await join_ok(client, WAVE, f"r{i}"))["ticket"] for i in range(12)]
    for _second in range(3):
        await admit(client, WAVE)
        clock.advance(1)
    changed = await client.put(
        f"/admin/v1/waves/{WAVE}", json={"admit_rate": 4, "admit_burst": 4}, headers=ADMIN
    )
    assert changed.status == 200
    for _second in range(3):
        await admit(client, WAVE)
        clock.advance(1)
    assert tickets
    record = await download(client, WAVE)
    report = run_audit(record)
    assert report.ok, report.as_json()
    assert report.stats["config_changes"] == 2
    # the same admissions under the first rate only would have outrun it
    forged = copy.deepcopy(record)
    configs = [e for e in entries_of(forged) if e["kind"] == "config"]
    configs[1]["line"] = configs[0]["line"].replace(" 1 config ", f" {configs[1]['position']} "
                                                    "config ")  # fmt: skip
    configs[1]["line"] = " ".join(
        [*configs[1]["line"].split(" ")[:3], str(configs[1]["at_ms"]),
         *configs[0]["line"].split(" ")[4:]]
    )  # fmt: skip
    configs[1]["fields"] = configs[0]["fields"]
    rehash(forged)
    assert "outflow" in failed(run_audit(forged))


async def test_gelombang_audit_checks_a_live_wave_and_a_saved_record(
    client: TestClient, clock: ManualClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command an auditor runs, against the service over HTTP (loopback)."""
    record = await lottery(client, clock)
    saved = tmp_path / "record.json"
    base = str(client.make_url("")).rstrip("/")
    commitment = record["before"]["draw"]["commitment"]
    argv = ["audit", WAVE, "--url", base, "--commitment", commitment, "--save", str(saved)]
    assert await asyncio.to_thread(cli.main, argv) == 0
    out = capsys.readouterr().out
    assert "RESULT: every check passed" in out and "PASS  draw" in out
    assert await asyncio.to_thread(cli.main, ["audit", WAVE, "--record", str(saved)]) == 0
    assert "RESULT: every check passed" in capsys.readouterr().out
    wrong = ["audit", WAVE, "--record", str(saved), "--commitment", "0" * 64, "--json"]
    assert await asyncio.to_thread(cli.main, wrong) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"]
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["commitment"]
    missing = ["audit", WAVE, "--url", "http://127.0.0.1:9"]
    assert await asyncio.to_thread(cli.main, missing) == 2


async def test_across_pages_the_stored_checkpoints_expose_an_entry_changed_later(
    client: TestClient,
    clock: ManualClock,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages of 4 entries: the chain joins page to page through the stored checkpoints; an
    entry changed in Redis after it was sealed breaks the join after its page."""
    monkeypatch.setattr(ledger_module, "PAGE_SIZE", 4)
    record = await lottery(client, clock)
    paged = {**record, **await download(client, WAVE, limit=4)}
    assert len(paged["pages"]) >= 4 and paged["pages"][1]["page_size"] == 4
    assert run_audit(paged).ok
    stored = await redis_client.lrange(WaveKeys(WAVE).ledger_checkpoints, 0, -1)
    assert len(stored) == record["head"]["count"] // 4
    key = WaveKeys(WAVE).ledger
    line = (await redis_client.lindex(key, 5)).decode()
    await redis_client.lset(key, 5, line + " x=1")  # a field added after the seal
    # (pages of 3: full pages of 4 already served are cached by the process, unchanged)
    again = {**await download(client, WAVE, limit=3), "head": record["head"]}
    report = run_audit(again)
    assert "chain" in failed(report)
    assert "page from 9" in next(c.detail for c in report.checks if c.name == "chain")


async def test_the_ledger_tells_when_the_wave_paused_filled_and_closed(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, WAVE, admit_rate=1, admit_burst=1, quota=2)
    for i in range(4):
        await join_ok(client, WAVE, f"r{i}")
    await admit(client, WAVE)
    for action in ("pause", "resume"):
        await client.post(f"/admin/v1/waves/{WAVE}/{action}", headers=ADMIN)
        clock.advance(1)
        await admit(client, WAVE)
    await client.post(f"/admin/v1/waves/{WAVE}/close", headers=ADMIN)
    await admit(client, WAVE)
    record = await download(client, WAVE)
    states = [e["fields"]["state"] for e in entries_of(record) if e["kind"] == "state"]
    assert states == ["open", "paused", "open", "full", "closed"]
    report = run_audit(record)
    assert report.ok and report.stats["admitted"] == 2 and len(report.stats["states"]) == 5
