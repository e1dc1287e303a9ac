"""Guarantee 14: a holder who opted in to be called back loses no place while away, until the
notification plus the return window; an absent holder costs no slot, quota or outflow; a
return link works once; contacts are encrypted at rest, never logged, deleted with the ticket.
(Delivery over real protocols: test_callback_delivery.py; never logged: tests/e2e/
test_no_secrets_in_logs.py; the page: tests/e2e/test_waiting_page.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from queue_service.audit import audit
from queue_service.clock import ManualClock
from queue_service.contacts import Contact
from queue_service.http.appkeys import CALLBACKS, SERVICE, STORE
from queue_service.keys import WaveKeys
from queue_service.store import AdmitStep, CallbackStep
from tests.helpers.support import (
    ADMIN,
    T0,
    admin_view,
    admit,
    join,
    join_ok,
    poll,
    poll_ok,
    put_wave,
)

WAVE = "w"
PHONE = "0812 3456 7890"
STORED_PHONE = "+6281234567890"
NOTIFY = {
    "channels": ["sms", "whatsapp", "webpush"],
    "webhook_url": "http://127.0.0.1:9/gateway",
    "lead_s": 60,
    "return_window_s": 600,
}


async def callback_wave(client: TestClient, **fields: Any) -> None:
    settings: dict[str, Any] = {"abandon_after_s": 5, "notify": NOTIFY}
    settings.update(fields)
    await put_wave(client, WAVE, **settings)
    await admit(client, WAVE)


async def away_for(
    client: TestClient, clock: ManualClock, seconds: float, polling: tuple[str, ...] = ()
) -> None:
    """The wave paused while `seconds` pass (steps go on): holders who opted in and do not
    poll are past their last poll deadline when it resumes."""
    await client.post(f"/admin/v1/waves/{WAVE}/pause", headers=ADMIN)
    await step(client, clock, seconds, polling=polling)
    await client.post(f"/admin/v1/waves/{WAVE}/resume", headers=ADMIN)


async def opt_in(client: TestClient, ticket: str, address: str = PHONE, kind: str = "sms") -> Any:
    response = await client.post(
        f"/api/v1/waves/{WAVE}/notify",
        json={"contact": {"kind": kind, "address": address}, "language": "id"},
        headers={"X-Queue-Ticket": ticket},
    )
    body = await response.json()
    assert response.status in (200, 201), body
    return body


async def outbox(redis_client: aioredis.Redis) -> list[dict[str, str]]:
    entries = await redis_client.xrange(WaveKeys(WAVE).outbox)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


STEP_S = 0.9  # under the 1 s gap that would count as an outage (admission.MIN_OUTAGE_GAP_MS)


async def step(
    client: TestClient, clock: ManualClock, seconds: float = STEP_S, polling: tuple[str, ...] = ()
) -> AdmitStep:
    """Step admission every STEP_S for `seconds` as the loop does (regular steps: no outage
    credit), the holders in `polling` polling before each: the last step, with what every
    step admitted and decided for call-backs summed up."""
    admitted: list[Any] = []
    totals = [0, 0, 0]
    result = None
    for _ in range(max(1, round(seconds / STEP_S))):
        for ticket in polling:
            await poll(client, WAVE, ticket)
        await client.app[SERVICE].seen.flush()
        clock.advance(STEP_S)
        result = await admit(client, WAVE)
        admitted += result.admitted
        totals = [a + b for a, b in zip(totals, result.callbacks, strict=True)]
    assert result is not None
    return dataclasses.replace(result, admitted=admitted, callbacks=CallbackStep(*totals))


def seq_of(ticket: str) -> int:
    return int(ticket.split(".")[0])


async def test_an_absent_holder_who_opted_in_loses_no_place_and_costs_no_slot_or_quota(
    client: TestClient, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    """A holds the first place, opted in, and stops polling; the grace of 5 s passes many times
    over. A is not abandoned: the line calls A, and B (polling) gets the only slot."""
    await callback_wave(client, max_active=1, quota=2, admit_rate=1, admit_burst=1)
    await client.post(f"/admin/v1/waves/{WAVE}/pause", headers=ADMIN)
    a = (await join_ok(client, WAVE, "a"))["ticket"]
    b = (await join_ok(client, WAVE, "b"))["ticket"]
    await opt_in(client, a)
    await step(client, clock, 60, polling=(b,))  # a minute: A is away, B polls as told
    await client.post(f"/admin/v1/waves/{WAVE}/resume", headers=ADMIN)
    result = await step(client, clock, STEP_S, polling=(b,))
    assert [t.seq for t in result.admitted] == [seq_of(b)]
    assert result.callbacks.called == 1
    assert result.counts.active == 1 and result.counts.admitted == 1  # A: no slot, no quota
    assert result.counts.abandoned == 0
    assert (await poll_ok(client, WAVE, b))["state"] == "admitted"
    messages = await outbox(redis_client)
    assert [m["kind"] for m in messages] == ["turn"] and messages[0]["seq"] == str(seq_of(a))
    # the ledger says so: A's place decided 'called', B admitted; nobody abandoned
    ledger = [line.decode() for line in await redis_client.lrange(WaveKeys(WAVE).ledger, 0, -1)]
    assert any("outcome=called" in line and f"seq={seq_of(a)} " in line for line in ledger)


async def test_a_called_holder_who_comes_back_is_admitted_first_within_the_bounds(
    client: TestClient, clock: ManualClock
) -> None:
    await callback_wave(client, admit_rate=1, admit_burst=1, max_active=1)
    await client.post(f"/admin/v1/waves/{WAVE}/pause", headers=ADMIN)
    a = (await join_ok(client, WAVE, "a"))["ticket"]
    await opt_in(client, a)
    b = (await join_ok(client, WAVE, "b"))["ticket"]
    c = (await join_ok(client, WAVE, "c"))["ticket"]
    await step(client, clock, 30, polling=(b, c))  # the grace passes: A keeps the place away
    await client.post(f"/admin/v1/waves/{WAVE}/resume", headers=ADMIN)
    first = await step(client, clock, 1, polling=(b, c))
    assert [t.seq for t in first.admitted] == [seq_of(b)]  # A called, B admitted
    assert first.callbacks.called == 1
    back = await poll_ok(client, WAVE, a)  # A comes back: first in line
    assert back["state"] == "waiting" and back["position"] == 1
    # max_active = 1 holds: B's slot must end before anyone else is admitted, A first
    blocked = await step(client, clock, 1, polling=(c,))
    assert blocked.admitted == []
    token = (await poll_ok(client, WAVE, b))["token"]
    done = await client.post(
        f"/api/v1/waves/{WAVE}/complete", headers={"Authorization": f"Bearer {token}"}
    )
    assert done.status == 204
    after = await step(client, clock, STEP_S, polling=(c,))
    assert [t.seq for t in after.admitted] == [seq_of(a)]
    assert after.callbacks.returned == 1
    assert (await poll_ok(client, WAVE, a))["state"] == "admitted"


async def test_a_called_holder_who_never_returns_is_skipped_when_the_window_ends(
    client: TestClient, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    await callback_wave(client)
    a = (await join_ok(client, WAVE, "a"))["ticket"]
    await opt_in(client, a)
    await away_for(client, clock, 10)
    called = await step(client, clock, 10)
    assert called.callbacks.called == 1 and called.admitted == []
    keys = WaveKeys(WAVE)
    assert await redis_client.hget(keys.callback_bucket(seq_of(a)), str(seq_of(a)))
    kept = await step(client, clock, 590)  # within the window: kept
    assert kept.callbacks.not_returned == 0
    assert (await admin_view(client, WAVE))["counts"]["called"] == 1
    lapsed = await step(client, clock, 20)
    assert lapsed.callbacks.not_returned == 1
    assert lapsed.counts.abandoned == 1 and lapsed.counts.admitted == 0
    assert (await poll_ok(client, WAVE, a))["state"] == "expired"
    # its contact and return code went with it
    assert await redis_client.hget(keys.callback_bucket(seq_of(a)), str(seq_of(a))) is None
    assert not [k async for k in redis_client.scan_iter(match=keys.prefix + "rc:*")]
    ledger = [line.decode() for line in await redis_client.lrange(keys.ledger, 0, -1)]
    assert any("return" in line and "reason=not_returned" in line for line in ledger)


async def test_holders_are_told_once_when_their_turn_is_near_however_many_processes_run_it(
    client: TestClient, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    """The notify step is one script: twenty concurrent runs tell each holder exactly once.
    With 1 admission/s and a lead of 60 s, the first 60 places are near; the 61st is not."""
    await callback_wave(client, admit_rate=1, admit_burst=1)
    tickets = [(await join_ok(client, WAVE, f"r{i}"))["ticket"] for i in range(80)]
    for ticket in tickets:
        await opt_in(client, ticket)
    await client.post(f"/admin/v1/waves/{WAVE}/pause", headers=ADMIN)
    runtime = await client.app[SERVICE].registry.get(WAVE)
    store = client.app[STORE]
    await admit(client, WAVE)
    places = round(NOTIFY["lead_s"] / runtime.pace_s)
    told = await asyncio.gather(*(store.notify_near(WAVE, places) for _ in range(20)))
    assert sum(t for t, _ in told) == places
    near = [m for m in await outbox(redis_client) if m["kind"] == "near"]
    assert sorted(int(m["seq"]) for m in near) == [seq_of(t) for t in tickets[:places]]
    assert {int(m["until"]) for m in near} == {int((T0 + 600) * 1000)}


async def test_a_notified_holder_keeps_the_place_until_notification_plus_window(
    client: TestClient, clock: ManualClock
) -> None:
    """Told at t, reached at t + 100 s while away: kept until t + window, then skipped."""
    await callback_wave(client, admit_rate=1, admit_burst=1)
    await client.post(f"/admin/v1/waves/{WAVE}/pause", headers=ADMIN)
    a = (await join_ok(client, WAVE, "a"))["ticket"]
    await opt_in(client, a)
    await admit(client, WAVE)
    runtime = await client.app[SERVICE].registry.get(WAVE)
    await client.app[STORE].notify_near(WAVE, 10)  # told now (paused: by hand)
    await step(client, clock, 100)
    await client.post(f"/admin/v1/waves/{WAVE}/resume", headers=ADMIN)
    reached = await step(client, clock, 0.5)
    assert reached.callbacks.called == 1
    assert (await step(client, clock, 490)).callbacks.not_returned == 0  # 590 s after telling
    assert (await step(client, clock, 20)).callbacks.not_returned == 1
    assert runtime.config.notify.return_window_s == 600


async def test_a_return_link_works_once_on_any_device_and_names_nobody(
    client: TestClient, clock: ManualClock
) -> None:
    await callback_wave(client)
    a = (await join_ok(client, WAVE, "a"))["ticket"]
    await opt_in(client, a)
    await away_for(client, clock, 10)
    await step(client, clock, 10)  # called
    runtime = await client.app[SERVICE].registry.get(WAVE)
    stamp = a.split(".")[2]
    code = client.app[CALLBACKS].codes.code(WAVE, runtime.uid, stamp)
    assert stamp not in code and str(seq_of(a)) != code  # the link names no ticket
    page = await client.get(f"/w/{WAVE}/return?code={code}")  # a preview spends nothing
    assert page.status == 200 and "<form" in await page.text()
    client.session.cookie_jar.clear()  # another phone
    used = await client.post(f"/w/{WAVE}/return", data={"code": code}, allow_redirects=False)
    assert used.status == 303 and used.headers["Location"] == f"/w/{WAVE}"
    cookie = used.cookies["gelombang_ticket"].value
    assert cookie.split(".")[:3] == a.split(".")[:3]
    back = await step(client, clock, 0.5)
    assert [t.seq for t in back.admitted] == [seq_of(a)]
    again = await client.post(f"/w/{WAVE}/return", data={"code": code}, allow_redirects=False)
    assert again.status == 409
    api = await client.post(f"/api/v1/waves/{WAVE}/return", json={"code": code})
    assert api.status == 409 and (await api.json())["error"]["code"] == "return_link_used"
    bad = await client.post(f"/api/v1/waves/{WAVE}/return", json={"code": "x" * 5})
    assert bad.status == 400


async def test_contacts_are_encrypted_at_rest_and_deleted_with_the_ticket(
    client: TestClient, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    await callback_wave(client)
    await client.post(f"/admin/v1/waves/{WAVE}/pause", headers=ADMIN)
    tickets = [(await join_ok(client, WAVE, f"r{i}"))["ticket"] for i in range(3)]
    await opt_in(client, tickets[0], PHONE)
    await opt_in(client, tickets[1], "0813-1111-2222", kind="whatsapp")
    dump = b""
    async for key in redis_client.scan_iter():
        dump += key + repr(await redis_client.dump(key)).encode()
    for secret in (b"81234567890", b"6281234567890", b"81311112222"):
        assert secret not in dump
    keys = WaveKeys(WAVE)
    for ticket in tickets[:2]:
        assert await redis_client.hget(keys.callback_bucket(seq_of(ticket)), str(seq_of(ticket)))
    left = await client.post(f"/api/v1/waves/{WAVE}/leave", headers={"X-Queue-Ticket": tickets[0]})
    assert left.status == 204
    gone = await redis_client.hget(
        keys.callback_bucket(seq_of(tickets[0])), str(seq_of(tickets[0]))
    )
    assert gone is None
    # admission deletes it too: nobody needs to call an admitted holder
    await client.post(f"/admin/v1/waves/{WAVE}/resume", headers=ADMIN)
    await poll_ok(client, WAVE, tickets[1])
    await step(client, clock, 0.5)
    assert (
        await redis_client.hget(keys.callback_bucket(seq_of(tickets[1])), str(seq_of(tickets[1])))
        is None
    )
    assert not [k async for k in redis_client.scan_iter(match=keys.prefix + "rc:*")]


async def test_a_contact_copied_onto_another_ticket_does_not_decrypt(
    client: TestClient,
) -> None:
    callbacks = client.app[CALLBACKS]
    cipher = callbacks.cipher
    sealed = cipher.seal(b"+628123", cipher.associated(WAVE, "uid", "stampA"))
    assert cipher.open(sealed, cipher.associated(WAVE, "uid", "stampA")) == b"+628123"
    assert cipher.open(sealed, cipher.associated(WAVE, "uid", "stampB")) is None
    assert cipher.open(sealed, cipher.associated("other", "uid", "stampA")) is None
    assert repr(Contact("sms", "+6281")) == str(Contact("sms", "+6281")) == "Contact(sms, ***)"


async def test_bad_contacts_and_waves_without_callbacks_are_refused_with_a_reason(
    client: TestClient,
) -> None:
    await put_wave(client, "plain")
    plain = (await join_ok(client, "plain", "a"))["ticket"]
    response = await client.post(
        "/api/v1/waves/plain/notify",
        json={"contact": {"kind": "sms", "address": PHONE}},
        headers={"X-Queue-Ticket": plain},
    )
    assert response.status == 409 and (await response.json())["error"]["code"] == "callbacks_off"
    await callback_wave(client)
    ticket = (await join_ok(client, WAVE, "a"))["ticket"]
    for contact, code in (
        ({"kind": "sms", "address": "12"}, "invalid_contact"),
        ({"kind": "email", "address": "a@b.id"}, "channel_not_offered"),
        ({"kind": "pigeon", "address": "x"}, "invalid_contact"),
        ({"kind": "sms"}, "invalid_contact"),
        ({"kind": "webpush", "address": {"endpoint": "https://p.example/x"}}, "invalid_contact"),
        ("sms", "invalid_contact"),
    ):
        response = await client.post(
            f"/api/v1/waves/{WAVE}/notify",
            json={"contact": contact},
            headers={"X-Queue-Ticket": ticket},
        )
        body = await response.json()
        assert response.status == 400 and body["error"]["code"] == code, (contact, body)
    client.session.cookie_jar.clear()
    no_ticket = await client.post(f"/api/v1/waves/{WAVE}/notify", json={"contact": {}})
    assert no_ticket.status == 401
    # a join that asks for call-backs with a bad contact takes no place
    status, body = await join(client, WAVE, "b")
    assert status == 201
    response = await client.post(
        f"/api/v1/waves/{WAVE}/join",
        json={"registrant": "c", "contact": {"kind": "sms", "address": "nope"}},
    )
    assert response.status == 400
    assert (await admin_view(client, WAVE))["counts"]["waiting"] == 2


async def test_a_join_can_opt_in_and_a_contact_can_be_changed_a_few_times_only(
    client: TestClient,
) -> None:
    await callback_wave(client)
    response = await client.post(
        f"/api/v1/waves/{WAVE}/join",
        json={"registrant": "a", "contact": {"kind": "sms", "address": PHONE}, "language": "en"},
    )
    body = await response.json()
    assert response.status == 201, body
    assert body["callback"] == {
        "kind": "sms", "state": "away", "lead_s": 60.0, "return_window_s": 600.0,
    }  # fmt: skip
    ticket = body["ticket"]
    for _ in range(3):
        await opt_in(client, ticket, "0812 0000 0000")
    refused = await client.post(
        f"/api/v1/waves/{WAVE}/notify",
        json={"contact": {"kind": "sms", "address": PHONE}},
        headers={"X-Queue-Ticket": ticket},
    )
    assert refused.status == 429
    info = await (await client.get(f"/api/v1/waves/{WAVE}")).json()
    assert info["callbacks"]["channels"] == NOTIFY["channels"]
    assert info["callbacks"]["vapid_public_key"]


async def test_outflow_quota_and_order_hold_with_call_backs_and_the_audit_passes(
    client: TestClient, clock: ManualClock
) -> None:
    """Thirty holders, a third opted in and away, a third of those back when called: every
    admission within the bucket and the quota, and the public audit passes on the ledger."""
    from tests.guarantees.test_guarantee_public_proof import download

    await callback_wave(client, admit_rate=2, admit_burst=2, quota=25)
    tickets = [(await join_ok(client, WAVE, f"r{i}"))["ticket"] for i in range(30)]
    away = tickets[::3]
    for ticket in away:
        await opt_in(client, ticket)
    present = tuple(t for t in tickets if t not in away)
    await away_for(client, clock, 10, polling=present)
    first = await step(client, clock, 20, polling=present)
    returning = tuple(away[::3])
    second = await step(client, clock, 10, polling=returning)
    assert len(first.admitted) + len(second.admitted) == len(present) + len(returning)
    assert first.callbacks.called + second.callbacks.called == len(away)
    assert second.callbacks.returned == len(returning)
    report = audit(WAVE, **_audit_args(await download(client, WAVE)))
    assert report.ok, report.as_json()
    assert report.stats["called"] == len(away)
    assert report.stats["admitted"] == len(present) + len(returning)


def _audit_args(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "info": record["info"],
        "pages": record["pages"],
        "head": record["head"],
        "jwks": record["jwks"],
    }


async def test_verified_holders_still_waiting_keep_their_standing_in_the_next_wave(
    client: TestClient, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    """Wave a closes with four verified holders waiting, three of them opted in. The three
    get a place in wave b ahead of b's own pre-queue, in their order in a, and are told; the
    one who did not opt in is not carried (nobody could tell them, or keep their place away).
    Signing in for b finds the carried place; b's draw puts them first; the audit agrees."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from queue_service.carry_over import CarryOver
    from queue_service.enqueue import mint_enqueue_token
    from queue_service.tokens import public_jwk
    from tests.guarantees.test_guarantee_public_proof import download

    key = Ed25519PrivateKey.generate()
    verified = {"verified_joins": True, "enqueue_keys": [public_jwk(key.public_key())]}
    notify = {**NOTIFY, "carry_over_to": "b", "carry_over_order": "ahead"}
    await put_wave(client, "a", abandon_after_s=5, notify=notify, **verified)
    await put_wave(
        client, "b", opens_at=T0 + 3600, closes_at=T0 + 7200, prequeue_s=7200, notify=NOTIFY,
        **verified,
    )  # fmt: skip
    await client.post("/admin/v1/waves/a/pause", headers=ADMIN)

    def token(wave: str, account: str) -> str:
        return mint_enqueue_token(key, wave=wave, account=account, now=clock.now())

    async def join_verified(wave: str, account: str, contact: bool) -> Any:
        body: dict[str, Any] = {"enqueue_token": token(wave, account)}
        if contact:
            body["contact"] = {"kind": "sms", "address": "0812 3456 7890"}
        client.session.cookie_jar.clear()
        response = await client.post(f"/api/v1/waves/{wave}/join", json=body)
        assert response.status in (200, 201), await response.text()
        return await response.json()

    newcomer = await join_verified("b", "someone-new", contact=False)  # b's own pre-queue
    for account in ("acct-1", "acct-2", "acct-3", "acct-4"):
        await join_verified("a", account, contact=account != "acct-3")
    await client.post("/admin/v1/waves/a/close", headers=ADMIN)
    await admit(client, "a")
    runtime = await client.app[SERVICE].registry.get("a")
    service = client.app[SERVICE]
    carry = CarryOver(client.app[STORE], service.registry, client.app[CALLBACKS], service.codec)
    assert await carry.run_if_due(runtime) == 3
    assert await carry.run_if_due(runtime) == 0  # once

    keys_b = WaveKeys("b")
    carried = [int(s) for s in await redis_client.lrange(keys_b.carried, 0, -1)]
    assert carried == [2, 3, 4]  # after b's newcomer (seq 1), in their order in a
    told = await redis_client.xrange(keys_b.outbox)
    assert [f[b"kind"] for _, f in told] == [b"carried"] * 3
    # the contacts left wave a with them
    assert not [k async for k in redis_client.scan_iter(match=WaveKeys("a").prefix + "ct:*")]
    # signing in for b finds the carried place (the same account), not a new one
    again = await join_verified("b", "acct-2", contact=False)
    assert int(again["ticket"].split(".")[0]) == 3 and again["state"] == "prequeue"

    # b opens: the carried lead its draw, in order; then the rest as drawn
    clock.advance(3601)
    await client.post("/admin/v1/waves/b/pause", headers=ADMIN)
    await admit(client, "b")
    await client.post("/admin/v1/waves/b/resume", headers=ADMIN)
    first = await admit(client, "b")
    ledger = [line.decode() for line in await redis_client.lrange(keys_b.ledger, 0, -1)]
    decided = [line for line in ledger if " ticket " in line]
    assert [int(line.split("seq=")[1].split()[0]) for line in decided[:3]] == [2, 3, 4]
    assert first.counts.drawn
    report = audit("b", **_audit_args(await download(client, "b")))
    assert report.ok, report.as_json()
    assert newcomer["state"] == "prequeue"


async def test_when_a_wave_ends_the_contacts_it_still_holds_are_deleted(
    client: TestClient, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    """Nobody is called in a closed wave: the tickets still waiting ended with it, and their
    contacts, return codes and call-back sets go (the admission loop does it once)."""
    from queue_service.carry_over import CarryOver

    await callback_wave(client)
    await client.post(f"/admin/v1/waves/{WAVE}/pause", headers=ADMIN)
    for i in range(250):  # three ticket buckets
        ticket = (await join_ok(client, WAVE, f"r{i}"))["ticket"]
        if i % 50 == 0:
            await opt_in(client, ticket)
    keys = WaveKeys(WAVE)
    assert [k async for k in redis_client.scan_iter(match=keys.prefix + "ct:*")]
    service = client.app[SERVICE]
    carry = CarryOver(client.app[STORE], service.registry, client.app[CALLBACKS], service.codec)
    await admit(client, WAVE)
    assert await carry.run_if_due(await service.registry.get(WAVE)) == 0  # not ended: kept
    assert [k async for k in redis_client.scan_iter(match=keys.prefix + "ct:*")]
    await client.post(f"/admin/v1/waves/{WAVE}/close", headers=ADMIN)
    await admit(client, WAVE)
    await carry.run_if_due(await service.registry.get(WAVE))
    for pattern in ("ct:*", "rc:*", "cb", "cb:pq", "called"):
        assert not [k async for k in redis_client.scan_iter(match=keys.prefix + pattern)], pattern


async def test_a_verified_join_may_use_the_number_the_registration_site_verified(
    client: TestClient, redis_client: aioredis.Redis
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from queue_service.enqueue import mint_enqueue_token
    from queue_service.tokens import public_jwk

    key = Ed25519PrivateKey.generate()
    await put_wave(
        client, WAVE, verified_joins=True, enqueue_keys=[public_jwk(key.public_key())],
        notify=NOTIFY,
    )  # fmt: skip
    claims = {"phone_number": "+6281299998888", "phone_number_verified": True}
    token = mint_enqueue_token(key, wave=WAVE, account="acct-9", now=T0, extra_claims=claims)
    response = await client.post(
        f"/api/v1/waves/{WAVE}/join", json={"enqueue_token": token, "contact": {"kind": "sms"}}
    )
    body = await response.json()
    assert response.status == 201 and body["callback"]["kind"] == "sms", body
    seq, stamp = seq_of(body["ticket"]), body["ticket"].split(".")[2]
    record = await redis_client.hget(WaveKeys(WAVE).callback_bucket(seq), str(seq))
    sealed = record.decode().split("|", 5)[5]
    runtime = await client.app[SERVICE].registry.get(WAVE)
    cipher = client.app[CALLBACKS].cipher
    plain = cipher.open(sealed, cipher.associated(WAVE, runtime.uid, stamp))
    assert Contact.from_bytes(plain or b"{}").address == "+6281299998888"
    # without a verified number, the address is needed: the place is taken, the reason told
    unverified = mint_enqueue_token(key, wave=WAVE, account="acct-10", now=T0)
    response = await client.post(
        f"/api/v1/waves/{WAVE}/join",
        json={"enqueue_token": unverified, "contact": {"kind": "sms"}},
    )
    body = await response.json()
    assert response.status == 201 and body["callback"]["error"]["code"] == "invalid_contact"


async def carried_into(
    client: TestClient, clock: ManualClock, order: str, next_wave: dict[str, Any]
) -> list[int]:
    """Wave a closes with two verified holders waiting and opted in; b is `next_wave`. The
    seqs the two got in b."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from queue_service.carry_over import CarryOver
    from queue_service.enqueue import mint_enqueue_token
    from queue_service.tokens import public_jwk

    key = Ed25519PrivateKey.generate()
    verified = {"verified_joins": True, "enqueue_keys": [public_jwk(key.public_key())]}
    notify = {**NOTIFY, "carry_over_to": "b", "carry_over_order": order}
    await put_wave(client, "a", abandon_after_s=5, notify=notify, **verified)
    await put_wave(client, "b", notify=NOTIFY, **verified, **next_wave)
    await client.post("/admin/v1/waves/a/pause", headers=ADMIN)
    for wave, account in (("b", "b-own"), ("a", "x"), ("a", "y")):
        body: dict[str, Any] = {
            "enqueue_token": mint_enqueue_token(key, wave=wave, account=account, now=clock.now()),
            "contact": {"kind": "sms", "address": "081234567890"},
        }
        client.session.cookie_jar.clear()
        response = await client.post(f"/api/v1/waves/{wave}/join", json=body)
        assert response.status == 201, await response.text()
    await client.post("/admin/v1/waves/a/close", headers=ADMIN)
    await admit(client, "a")
    service = client.app[SERVICE]
    carry = CarryOver(client.app[STORE], service.registry, client.app[CALLBACKS], service.codec)
    assert await carry.run_if_due(await service.registry.get("a")) == 2
    return [2, 3]


async def test_carried_into_a_wave_that_has_opened_they_join_the_back_of_its_line(
    client: TestClient, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    await carried_into(client, clock, "ahead", {})  # b opened ten seconds ago
    keys = WaveKeys("b")
    assert await redis_client.llen(keys.carried) == 0  # nobody ahead of b's own line
    # opted in at the back, in their order in a: told when their turn is near, like anyone
    pending = await redis_client.zrange(keys.prefix + "cb", 0, -1, withscores=True)
    assert [(int(m), int(s)) for m, s in pending] == [(1, 0), (2, 1), (3, 2)]


async def test_carried_into_a_shuffled_prequeue_they_are_drawn_with_everyone(
    client: TestClient, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    later = {"opens_at": T0 + 3600, "closes_at": T0 + 7200, "prequeue_s": 7200}
    await carried_into(client, clock, "prequeue", later)
    keys = WaveKeys("b")
    assert await redis_client.llen(keys.carried) == 0  # nobody leads the draw
    assert sorted(int(m) for m in await redis_client.zrange(keys.prequeue, 0, -1)) == [1, 2, 3]
    ledger = [line.decode() for line in await redis_client.lrange(keys.ledger, 0, -1)]
    assert [line.split(" carry ")[1].split()[-1] for line in ledger if " carry " in line] == [
        "place=prequeue",
        "place=prequeue",
    ]
