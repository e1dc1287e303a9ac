"""Guarantee 11: one person, one place. Registrant ids are normalised; knowing someone's id never
gives their ticket or token; verified joins take only an enqueue token from the registration
site; a shared address is not a weapon; and no ticket ever names two people, even after Redis
comes back with older data."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import redis as sync_redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from queue_service.app import create_app
from queue_service.clock import ManualClock
from queue_service.enqueue import mint_enqueue_token
from queue_service.http.appkeys import SERVICE, STORE
from queue_service.identity import canonical_registrant
from queue_service.ratelimit import RateLimitRules, Rule
from queue_service.redis_server import EmbeddedRedis
from queue_service.settings import Settings
from queue_service.tokens import KeyRing, public_jwk
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
    wave_body,
)

NIK = "3171011508900001"  # Jakarta Utara, born 15 August 1990, serial 0001


async def test_spellings_of_one_id_share_one_place(client: TestClient) -> None:
    await put_wave(client, "w")
    first = await join_ok(client, "w", "Budi.Santoso@Example.com")
    for spelling in (" budi.santoso@example.com", "ＢＵＤＩ.santoso@example.com "):
        status, body = await join(client, "w", spelling, ticket=first["ticket"])
        assert status == 200 and body["ticket"] == first["ticket"], body
    assert (await admin_view(client, "w"))["counts"]["waiting"] == 1


async def test_spellings_of_one_nik_share_one_place_and_a_bad_nik_is_refused(
    client: TestClient,
) -> None:
    await put_wave(client, "w", id_kind="nik")
    first = await join_ok(client, "w", NIK)
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in NIK)
    for spelling in ("3171-0115-0890-0001", f" {NIK} ", "3171 0115 0890 0001", full_width):
        status, body = await join(client, "w", spelling, ticket=first["ticket"])
        assert status == 200 and body["ticket"] == first["ticket"], (spelling, body)
    for bad, why in (
        ("317101150890001", "16 digits"),
        ("9971011508900001", "province"),
        ("3171011513900001", "birth date"),  # month 13
        ("3171011508900000", "serial"),
        ("3171abcd08900001", "16 digits"),
    ):
        status, body = await join(client, "w", bad)
        assert status == 400 and body["error"]["code"] == "invalid_nik", body
        assert why in body["error"]["message"]
    assert (await admin_view(client, "w"))["counts"]["waiting"] == 1


def test_canonical_forms_are_stable() -> None:
    assert canonical_registrant("ＡＢＣ ", "generic") == "abc"
    assert canonical_registrant("3171.0115.0890.0001", "nik") == NIK
    assert canonical_registrant("3171015508900001", "nik") == "3171015508900001"  # day 55: F


async def test_knowing_someones_id_gives_neither_their_ticket_nor_their_place(
    client: TestClient,
) -> None:
    await put_wave(client, "w", id_kind="nik")
    mine = await join_ok(client, "w", NIK)
    # the attacker's own browser (no cookie of the victim's), knowing only the NIK
    async with aiohttp.ClientSession() as attacker:
        url = str(client.make_url("/api/v1/waves/w"))
        async with attacker.post(url + "/join", json={"registrant": "3171-0115-0890-0001"}) as r:
            body = await r.json()
            assert r.status == 409 and body["error"]["code"] == "already_queued"
            assert "ticket" not in body and mine["ticket"] not in str(body)
            assert "gelombang_ticket" not in r.cookies
        # without the ticket nobody can make the victim leave (and without the token, end it)
        async with attacker.post(url + "/leave") as r:
            assert r.status == 401
        await admit(client, "w")
        admitted = await poll_ok(client, "w", mine["ticket"])
        assert admitted["state"] == "admitted"
        async with attacker.post(url + "/join", json={"registrant": NIK}) as r:
            body = await r.json()
            assert r.status == 409 and "token" not in body
    # the holder's own browser still gets its place back on a refresh (its cookie)
    status, again = await join(client, "w", NIK)
    assert status == 200 and again["state"] == "admitted" and again["ticket"] == mine["ticket"]


async def test_a_lapsed_place_may_be_joined_again_at_the_back(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, "w", session_ttl_s=30)
    first = await join_ok(client, "w", "me")
    await admit(client, "w")
    assert (await poll_ok(client, "w", first["ticket"]))["state"] == "admitted"
    clock.advance(31)
    await admit(client, "w")
    assert (await poll_ok(client, "w", first["ticket"]))["state"] == "expired"
    status, again = await join(client, "w", "me")
    assert status == 201 and again["ticket"] != first["ticket"] and again["state"] == "waiting"


# -- verified joins ---------------------------------------------------------------------------


@pytest.fixture
def site_key() -> Ed25519PrivateKey:
    """The registration site's enqueue-token signing key."""
    return Ed25519PrivateKey.generate()


def site_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    return public_jwk(key.public_key())


async def test_verified_joins_take_only_an_enqueue_token_from_the_site(
    client: TestClient, clock: ManualClock, site_key: Ed25519PrivateKey
) -> None:
    jwk = site_jwk(site_key)
    await put_wave(client, "w", verified_joins=True, enqueue_keys=[jwk], enqueue_issuer="site")

    def token(**overrides: object) -> str:
        fields: dict[str, object] = dict(
            wave="w", account="acct-17", kid=jwk["kid"], issuer="site", now=clock.now()
        )
        fields.update(overrides)
        key = fields.pop("key", site_key)
        return mint_enqueue_token(key, **fields)  # type: ignore[arg-type]

    status, body = await join(client, "w", NIK)
    assert status == 401 and body["error"]["code"] == "enqueue_token_required"
    refused = {
        "forged": token(key=Ed25519PrivateKey.generate()),
        "other wave": token(wave="v"),
        "other issuer": token(issuer="evil"),
        "expired": token(now=clock.now() - 400, lifetime_s=300),
        "from the future": token(now=clock.now() + 120),
        "not a jwt": "x.y.z",
        "non-ascii": "ÿ.ÿ.ÿ",
    }
    for name, bad in refused.items():
        response = await client.post("/api/v1/waves/w/join", json={"enqueue_token": bad})
        body = await response.json()
        assert response.status == 401, (name, body)
        assert body["error"]["code"] == "invalid_enqueue_token", (name, body)
    signed_in = token()
    response = await client.post("/api/v1/waves/w/join", json={"enqueue_token": signed_in})
    assert response.status == 201
    first = await response.json()
    # the same token again (a URL seen in a history or a Referer) proves nothing: no place
    client.session.cookie_jar.clear()
    response = await client.post("/api/v1/waves/w/join", json={"enqueue_token": signed_in})
    assert response.status == 409 and (await response.json())["error"]["code"] == "already_queued"
    # a second device of the same account proves itself with a fresh token: same place
    clock.advance(1)
    response = await client.post("/api/v1/waves/w/join", json={"enqueue_token": token()})
    assert response.status == 200 and (await response.json())["ticket"] == first["ticket"]
    # another account is another person
    response = await client.post(
        "/api/v1/waves/w/join", json={"enqueue_token": token(account="acct-18")}
    )
    assert response.status == 201


async def test_enqueue_keys_come_from_the_sites_jwks_and_follow_its_rotation(
    client: TestClient, clock: ManualClock, site_key: Ed25519PrivateKey
) -> None:
    keys = [site_key]

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [site_jwk(k) for k in keys]})

    site = web.Application()
    site.router.add_get("/.well-known/jwks.json", jwks)
    async with TestServer(site, host="127.0.0.1") as server:
        url = str(server.make_url("/.well-known/jwks.json"))
        await put_wave(client, "w", verified_joins=True, enqueue_jwks_url=url)
        for key, account in ((site_key, "a"), (Ed25519PrivateKey.generate(), "b")):
            if key not in keys:
                keys.append(key)  # the site rotates in a new key
                client.app[SERVICE].enqueue._jwks[url].fetched_at -= 60  # past the refetch floor
            kid = site_jwk(key)["kid"]
            enqueue = mint_enqueue_token(key, wave="w", account=account, kid=kid, now=clock.now())
            response = await client.post("/api/v1/waves/w/join", json={"enqueue_token": enqueue})
            assert response.status == 201, await response.text()


async def test_a_signed_account_id_is_compared_exactly_as_signed(
    client: TestClient, clock: ManualClock, site_key: Ed25519PrivateKey
) -> None:
    """Account ids that folding would merge (case, ß/SS, full-width, the Kelvin sign) are
    different accounts at the registration site: each gets a place of its own, and none is
    handed another's ticket. On a NIK wave the signed id is a NIK, with the NIK rules."""
    jwk = site_jwk(site_key)
    await put_wave(client, "w", verified_joins=True, enqueue_keys=[jwk])
    await put_wave(client, "n", verified_joins=True, enqueue_keys=[jwk], id_kind="nik")

    async def join_as(wave: str, account: str) -> tuple[int, dict[str, object]]:
        clock.advance(1)  # a fresh token each time (a token proves one join)
        token = mint_enqueue_token(
            site_key, wave=wave, account=account, kid=jwk["kid"], now=clock.now()
        )
        client.session.cookie_jar.clear()  # each account on its own device
        response = await client.post(f"/api/v1/waves/{wave}/join", json={"enqueue_token": token})
        return response.status, await response.json()

    tickets = set()
    for first, second in (
        ("Acct-7Fq2", "acct-7fq2"),
        ("STRASSE", "straße"),
        ("user\uff11", "user1"),  # full-width digit one
        ("K", "\u212a"),  # Kelvin sign
    ):
        for account in (first, second):
            status, body = await join_as("w", account)
            assert status == 201, (account, body)
            tickets.add(body["ticket"])
    assert len(tickets) == 8
    status, body = await join_as("n", NIK)
    assert status == 201
    status, again = await join_as("n", "3171-0115-0890-0001")
    assert status == 200 and again["ticket"] == body["ticket"]


async def test_a_wave_takes_bare_ids_or_enqueue_tokens_never_both(
    client: TestClient, clock: ManualClock, site_key: Ed25519PrivateKey
) -> None:
    """Both kinds of join in one wave would hand a place claimed with a bare id (by anyone who
    knows it) to the person who later proves it: such a wave is refused, and a wave stored that
    way before takes no enqueue token."""
    jwk = site_jwk(site_key)
    response = await client.put(
        "/admin/v1/waves/w",
        json={**wave_body(), "enqueue_keys": [jwk]},
        headers=ADMIN,
    )
    body = await response.json()
    assert response.status == 400 and "never both" in body["error"]["message"]
    await put_wave(client, "w")
    config = client.app[SERVICE].registry.loaded["w"].config  # as an older version stored it
    await client.app[STORE].put_wave(dataclasses.replace(config, enqueue_keys=(jwk,)))
    await client.app[SERVICE].registry.reload("w")
    await join_ok(client, "w", "acct-1")  # a stranger claims the id bare
    client.session.cookie_jar.clear()
    token = mint_enqueue_token(
        site_key, wave="w", account="acct-1", kid=jwk["kid"], now=clock.now()
    )
    response = await client.post("/api/v1/waves/w/join", json={"enqueue_token": token})
    body = await response.json()
    assert response.status == 400 and body["error"]["code"] == "enqueue_token_not_accepted"


async def test_an_unproven_join_cannot_tell_a_registration_from_a_place_in_line(
    client: TestClient,
) -> None:
    """Knowing a NIK tells no more than that it is in use: a registrant who completed and one
    who waits get the same answer; the holder's own ticket still tells the truth."""
    await put_wave(client, "w", id_kind="nik")
    done = await join_ok(client, "w", NIK)
    waiting_nik = "3171014508900002"
    await join_ok(client, "w", waiting_nik)
    await client.post("/admin/v1/waves/w/pause", headers=ADMIN)
    await client.post("/admin/v1/waves/w/resume", headers=ADMIN)
    await admit(client, "w")
    token = (await poll_ok(client, "w", done["ticket"]))["token"]
    completed = await client.post(
        "/api/v1/waves/w/complete", headers={"Authorization": f"Bearer {token}"}
    )
    assert completed.status == 204
    client.session.cookie_jar.clear()
    answers = []
    for nik in (NIK, waiting_nik):
        status, body = await join(client, "w", nik)
        answers.append((status, body["error"]["code"]))
    assert answers[0] == answers[1] == (409, "already_queued")
    status, body = await join(client, "w", NIK, ticket=done["ticket"])
    assert status == 200 and body["state"] == "completed"


def test_a_wave_refuses_private_or_broken_enqueue_keys(site_key: Ed25519PrivateKey) -> None:
    from queue_service.errors import BadRequest
    from queue_service.waves import parse_wave

    base = {"opens_at": T0, "closes_at": T0 + 60, "admit_rate": 1, "origin_url": "http://o/"}
    private = {**site_jwk(site_key), "d": "secret"}
    for keys in ([private], [{"kty": "nope"}], "not a list"):
        with pytest.raises(BadRequest, match="enqueue_keys"):
            parse_wave("w", {**base, "verified_joins": True, "enqueue_keys": keys})
    with pytest.raises(BadRequest, match="verified_joins needs"):
        parse_wave("w", {**base, "verified_joins": True})


# -- shared addresses -------------------------------------------------------------------------

SHARED_LIMITS = RateLimitRules(
    enabled=True,
    join_per_ip=Rule(rate_per_s=100, burst=100),
    join_per_registrant=Rule(rate_per_s=1, burst=5),
    status_per_ip=Rule(rate_per_s=5, burst=20),
    status_per_ticket=Rule(rate_per_s=1, burst=3),
)


async def test_a_bot_behind_a_shared_address_gets_nobody_abandoned_and_gains_nothing(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    clock: ManualClock,
    keyring: KeyRing,
) -> None:
    """Carrier NAT: 20 polite people and a bot behind one address. The bot spends the
    address's status allowance; the people's polls are refused (429) but still count as seen,
    so none of them is skipped, and the bot is admitted no earlier than its place."""
    settings = make_settings(rate_limits=SHARED_LIMITS, trusted_proxies=("127.0.0.1/32",))
    client = await aiohttp_client(
        create_app(settings, clock=clock, keyring=keyring, run_admission=False)
    )
    await put_wave(client, "w", admit_rate=1, admit_burst=1, abandon_after_s=5)
    await admit(client, "w")
    nat = "198.51.100.9"
    people = [(await join_ok(client, "w", f"person{i}"))["ticket"] for i in range(20)]
    bots = []
    for i in range(5):
        bots.append((await join(client, "w", f"bot{i}", ip=nat))[1]["ticket"])
    refused = 0
    admitted_order: list[int] = []
    for _ in range(60):  # one minute, a second at a time
        for _ in range(4):  # the bot ignores every Retry-After (beyond 4 a second, its
            # own tickets are refused before they reach the address rule: no more effect)
            for ticket in bots:
                response = await client.get(
                    "/api/v1/waves/w/status",
                    headers={"X-Queue-Ticket": ticket, "X-Forwarded-For": nat},
                )
        for ticket in people:
            response = await client.get(
                "/api/v1/waves/w/status",
                headers={"X-Queue-Ticket": ticket, "X-Forwarded-For": nat},
            )
            refused += response.status == 429
        await client.app[SERVICE].seen.flush()
        clock.advance(1)
        admitted_order += [a.seq for a in (await admit(client, "w")).admitted]
    assert refused > 200, "the bot did not exhaust the shared address's allowance"
    assert (await admin_view(client, "w"))["counts"]["abandoned"] == 0
    assert admitted_order == sorted(admitted_order)  # join order: the bot jumped nobody
    assert admitted_order[:20] == list(range(1, 21))


# -- Redis returning with older data --------------------------------------------------------


@pytest.fixture
async def snapshot_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    server.start()
    yield server
    server.stop()


async def wait_for_state(client: TestClient, ticket: str, state: str) -> dict[str, object]:
    for _ in range(100):
        view = await poll_ok(client, "w", ticket)
        if view["state"] == state:
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"ticket never became {state}: {view}")


async def wait_ready(client: TestClient) -> None:
    for _ in range(100):
        if (await client.get("/readyz")).status == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the service did not recover")


@pytest.mark.slow
async def test_no_ticket_names_two_people_after_redis_returns_with_older_data(
    snapshot_redis: EmbeddedRedis,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    """A backup restored (or a lagging replica promoted): joins acknowledged after the snapshot
    are gone, and their numbers are handed out again. Old tickets of the lost range are refused
    with `ticket_lost` (join again); tickets from before the snapshot keep their place; a lost
    admission's token cannot end the session of the person who now has its number."""
    app = create_app(make_settings(redis_url=snapshot_redis.url, redis_timeout_s=0.5))
    client = await aiohttp_client(app)
    now = time.time()
    await put_wave(client, "w", opens_at=now - 5, closes_at=now + 600, admit_rate=1000,
                   abandon_after_s=600)  # fmt: skip
    await client.post("/admin/v1/waves/w/pause", headers=ADMIN)
    kept = [(await join_ok(client, "w", f"kept{i}"))["ticket"] for i in range(10)]
    redis = sync_redis.Redis.from_url(snapshot_redis.url)
    redis.save()
    redis.close()
    snapshot = tmp_path / "snapshot.rdb"
    shutil.copy(snapshot_redis.data_dir / "dump.rdb", snapshot)
    lost = [(await join_ok(client, "w", f"lost{i}"))["ticket"] for i in range(10)]
    await client.post("/admin/v1/waves/w/resume", headers=ADMIN)
    lost_token = (await wait_for_state(client, lost[0], "admitted"))["token"]

    snapshot_redis.kill()
    shutil.copy(snapshot, snapshot_redis.data_dir / "dump.rdb")
    snapshot_redis.start()
    await wait_ready(client)
    fresh = [(await join_ok(client, "w", f"fresh{i}"))["ticket"] for i in range(10)]
    assert [t.split(".")[0] for t in fresh] == [t.split(".")[0] for t in lost]  # numbers reused
    for ticket in lost:
        status, body = await poll(client, "w", ticket)
        assert status == 401 and body["error"]["code"] == "ticket_lost", body
    for ticket in kept:
        assert (await poll_ok(client, "w", ticket))["state"] == "paused"  # as in the backup

    await client.post("/admin/v1/waves/w/resume", headers=ADMIN)
    await wait_for_state(client, fresh[0], "admitted")
    active = (await admin_view(client, "w"))["counts"]["active"]
    response = await client.post(
        "/api/v1/waves/w/complete", headers={"Authorization": f"Bearer {lost_token}"}
    )
    assert response.status == 204  # idempotent, and it ended nothing:
    assert (await poll_ok(client, "w", fresh[0]))["state"] == "admitted"
    assert (await admin_view(client, "w"))["counts"]["active"] == active
    # a lost person joining again gets a new place, never somebody else's
    client.session.cookie_jar.clear()
    status, body = await join(client, "w", "lost3", ticket=lost[3])
    assert status == 201 and body["ticket"] not in lost + fresh
