"""Guarantee 8: forged, expired, wrong-wave, wrong-key and tampered admission tokens are
refused, by the verifier, by the queue's /complete, and by the origin middleware."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import generate_latest

from gelombang_origin import (
    ADMISSION,
    OriginHealthMetrics,
    RevocationFeed,
    TokenBindings,
    admission_middleware,
)
from queue_service.clock import ManualClock
from queue_service.http.appkeys import KEYRING
from queue_service.tokens import (
    InvalidAdmissionToken,
    KeyRing,
    TokenIssuer,
    TokenVerifier,
    key_id,
)
from tests.helpers.support import T0, admit, join_ok, poll_ok, put_wave


def issue(keyring: KeyRing, **overrides: object) -> str:
    fields: dict[str, object] = dict(
        wave="w",
        subject="abc",
        ticket=1,
        incarnation="i1",
        stamp="s1",
        admitted_at=T0,
        expires_at=T0 + 600,
    )
    fields.update(overrides)
    return TokenIssuer(keyring).issue(**fields)  # type: ignore[arg-type]


def tamper(token: str, **claims: object) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data.update(claims)
    new_payload = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{new_payload}.{signature}"


@pytest.fixture
def verifier(keyring: KeyRing, clock: ManualClock) -> TokenVerifier:
    return TokenVerifier.from_keyring(keyring, clock=clock)


def forged_with_same_kid(keyring: KeyRing) -> str:
    """Signed by an attacker's key while claiming the real key id."""
    payload = {
        "iss": "gelombang",
        "aud": "w",
        "sub": "x",
        "jti": "w.1",
        "iat": int(T0),
        "exp": int(T0) + 600,
        "tkt": 1,
    }
    return jwt.encode(
        payload,
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": keyring.signing_kid},
    )


BAD_TOKENS: dict[str, Callable[[KeyRing], str]] = {
    "forged": forged_with_same_kid,
    "expired": lambda k: issue(k, admitted_at=T0 - 700, expires_at=T0 - 100),
    "wrong_wave": lambda k: issue(k, wave="another-wave"),
    "wrong_key": lambda k: issue(KeyRing.from_keys(Ed25519PrivateKey.generate())),
    "tampered": lambda k: tamper(issue(k), sub="someone-else"),
    "alg_none": lambda k: jwt.encode({"aud": "w"}, None, algorithm="none"),
    "hs256_with_public_key": lambda k: jwt.encode(
        {"aud": "w"},
        "secret-guess-that-is-long-enough-for-hs256",
        algorithm="HS256",
        headers={"kid": k.signing_kid},
    ),
    "garbage": lambda k: "not.a.token",
}


def test_a_genuine_token_verifies(keyring: KeyRing, verifier: TokenVerifier) -> None:
    claims = verifier.verify(issue(keyring), wave="w")
    assert (claims.wave, claims.subject, claims.ticket) == ("w", "abc", 1)
    assert claims.expires_at == int(T0) + 600


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused_by_the_verifier(
    kind: str, keyring: KeyRing, verifier: TokenVerifier
) -> None:
    with pytest.raises(InvalidAdmissionToken):
        verifier.verify(BAD_TOKENS[kind](keyring), wave="w")


def test_rotation_keeps_old_tokens_valid_and_publishes_every_key(clock: ManualClock) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    before = KeyRing.from_keys(old)
    after = KeyRing.from_keys(new, [old.public_key()])
    token_before = issue(before)
    verifier = TokenVerifier.from_jwks(after.jwks(), clock=clock)
    assert verifier.verify(token_before, wave="w").ticket == 1
    assert verifier.verify(issue(after), wave="w").ticket == 1
    assert {k["kid"] for k in after.jwks()["keys"]} == {
        key_id(old.public_key()),
        key_id(new.public_key()),
    }
    assert jwt.get_unverified_header(issue(after))["kid"] == key_id(new.public_key())


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_complete_refuses_bad_tokens(
    kind: str, client: TestClient, keyring: KeyRing, clock: ManualClock
) -> None:
    await put_wave(client, "w", admit_rate=1000, max_active=1)
    await join_ok(client, "w", "a")
    await admit(client, "w")
    response = await client.post(
        "/api/v1/waves/w/complete",
        headers={"Authorization": f"Bearer {BAD_TOKENS[kind](keyring)}"},
    )
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "invalid_token"
    assert (await admit(client, "w")).counts.active == 1  # the slot was not freed


async def test_the_queues_own_token_passes_the_origin_middleware_and_jwks(
    client: TestClient,
    aiohttp_client: Callable[..., object],
    clock: ManualClock,
    keyring: KeyRing,
) -> None:
    await put_wave(client, "w", admit_rate=1000)
    ticket = (await join_ok(client, "w", "a"))["ticket"]
    await admit(client, "w")
    token = (await poll_ok(client, "w", ticket))["token"]
    jwks = await (await client.get("/.well-known/jwks.json")).json()

    async def protected(request: web.Request) -> web.Response:
        return web.json_response({"sub": request[ADMISSION].subject})

    origin = web.Application(
        middlewares=[admission_middleware(TokenVerifier.from_jwks(jwks, clock=clock), wave="w")]
    )
    origin.router.add_get("/daftar", protected)
    origin_client = await aiohttp_client(origin)  # type: ignore[operator]
    ok = await origin_client.get(f"/daftar?gelombang_token={token}")
    assert ok.status == 200
    assert "gelombang_admission" in ok.cookies  # moved out of the URL into a cookie
    for kind, make in BAD_TOKENS.items():
        refused = await origin_client.get(
            "/daftar", headers={"Authorization": f"Bearer {make(keyring)}"}
        )
        assert refused.status == 401, kind


async def admitted_token(client: TestClient, wave: str, registrant: str) -> str:
    ticket = (await join_ok(client, wave, registrant))["ticket"]
    await admit(client, wave)
    token: str = (await poll_ok(client, wave, ticket))["token"]
    return token


async def origin_with_guard(
    client: TestClient,
    aiohttp_client: Callable[..., object],
    clock: ManualClock,
    **guard: object,
) -> TestClient:
    jwks = await (await client.get("/.well-known/jwks.json")).json()

    async def protected(request: web.Request) -> web.Response:
        return web.json_response({"jti": request[ADMISSION].token_id})

    middleware = admission_middleware(
        TokenVerifier.from_jwks(jwks, clock=clock),
        wave="w",
        **guard,  # type: ignore[arg-type]
    )
    origin = web.Application(middlewares=[middleware])
    origin.router.add_get("/daftar", protected)
    return await aiohttp_client(origin)  # type: ignore[operator, no-any-return]


async def test_the_origin_guard_refuses_the_token_of_a_session_that_ended(
    client: TestClient, aiohttp_client: Callable[..., object], clock: ManualClock
) -> None:
    await put_wave(client, "w", admit_rate=1000)
    token = await admitted_token(client, "w", "a")
    feed = RevocationFeed(str(client.make_url("")), wave="w")
    origin = await origin_with_guard(client, aiohttp_client, clock, revocations=feed)
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await origin.get("/daftar", headers=bearer)).status == 200
    response = await client.post("/api/v1/waves/w/complete", headers=bearer)
    assert response.status == 204  # the registration is done: the session ends at the queue
    async with aiohttp.ClientSession() as session:
        await feed.refresh(session)  # what the feed's task does every couple of seconds
    refused = await origin.get("/daftar", headers=bearer)
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "session_ended"
    other = await admitted_token(client, "w", "b")  # somebody else's session is untouched
    assert (await origin.get("/daftar", headers={"Authorization": f"Bearer {other}"})).status == 200


async def test_no_ended_session_is_missed_by_any_reader_at_any_interval(
    client: TestClient, clock: ManualClock
) -> None:
    """Hundreds of sessions end in bursts (many in one millisecond) while three origin
    replicas read the feed, one every millisecond: each ends up with every single one, and its
    pages neither skip nor repeat."""
    count = 300
    await put_wave(client, "w", admit_rate=100_000, admit_burst=100_000)
    tickets = [(await join_ok(client, "w", f"r{i}"))["ticket"] for i in range(count)]
    await admit(client, "w")
    tokens = [(await poll_ok(client, "w", ticket))["token"] for ticket in tickets]
    url = str(client.make_url(""))
    feeds = [RevocationFeed(url, wave="w", interval_s=s) for s in (0.001, 0.005, 0.05)]
    reads: list[list[str]] = [[] for _ in feeds]
    stop = asyncio.Event()

    async def read(feed: RevocationFeed, seen: list[str]) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                before = set(feed._revoked)
                await feed.refresh(session)
                seen.extend(set(feed._revoked) - before)
                await asyncio.sleep(feed._interval_s)

    readers = [asyncio.create_task(read(f, seen)) for f, seen in zip(feeds, reads, strict=True)]
    for start in range(0, count, 50):
        await asyncio.gather(
            *(
                client.post("/api/v1/waves/w/complete", headers={"Authorization": f"Bearer {t}"})
                for t in tokens[start : start + 50]
            )
        )
    expected = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}
    for _ in range(200):
        if all(expected <= set(f._revoked) for f in feeds):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*readers)
    for feed, seen in zip(feeds, reads, strict=True):
        assert expected - set(feed._revoked) == set(), "a revocation was missed"
        assert len(seen) == len(set(seen))


async def test_a_one_time_token_works_from_the_first_browser_only(
    client: TestClient,
    aiohttp_client: Callable[..., object],
    clock: ManualClock,
    keyring: KeyRing,
) -> None:
    await put_wave(client, "w", admit_rate=1000, one_time_tokens=True)
    token = await admitted_token(client, "w", "a")
    assert TokenVerifier.from_keyring(keyring, clock=clock).verify(token, wave="w").one_time
    first = await origin_with_guard(client, aiohttp_client, clock, bindings=TokenBindings())
    arrived = await first.get(f"/daftar?gelombang_token={token}")  # the queue's redirect
    assert arrived.status == 200 and "gelombang_binding" in arrived.cookies
    assert (await first.get("/daftar")).status == 200  # the same browser, its cookies
    # the link shared, or the token copied: another client is refused
    url = str(first.make_url("/daftar"))
    async with aiohttp.ClientSession() as second:
        for kwargs in (
            {"params": {"gelombang_token": token}},
            {"headers": {"Authorization": f"Bearer {token}"}},
        ):
            async with second.get(url, **kwargs) as refused:  # type: ignore[arg-type]
                assert refused.status == 401
                assert (await refused.json())["error"]["code"] == "token_already_used"
    # an API client keeps its binding in the header it was given
    api = await admitted_token(client, "w", "api")
    bearer = {"Authorization": f"Bearer {api}"}
    answer = await first.session.get(first.make_url("/daftar"), headers=bearer)
    binding = answer.headers["X-Gelombang-Binding"]
    first.session.cookie_jar.clear()
    again = await first.session.get(
        first.make_url("/daftar"), headers={**bearer, "X-Gelombang-Binding": binding}
    )
    assert again.status == 200


async def test_the_origin_guard_measures_what_the_autopilot_reads(
    client: TestClient, aiohttp_client: Callable[..., object], clock: ManualClock
) -> None:
    """Any aiohttp origin behind the guard exports the duration and status of the requests it
    let through (the autopilot's default queries), and not the guard's own refusals."""
    await put_wave(client, "w", admit_rate=1000)
    token = await admitted_token(client, "w", "a")
    jwks = TokenVerifier.from_jwks(client.app[KEYRING].jwks(), clock=clock)
    health = OriginHealthMetrics()
    middleware = admission_middleware(jwks, wave="w", health=health)

    async def register(request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, status=201)

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "down"}, status=503)

    origin = web.Application(middlewares=[middleware])
    origin.router.add_post("/daftar", register, name="daftar")
    origin.router.add_post("/otp", broken, name="otp")
    guarded = await aiohttp_client(origin)  # type: ignore[operator]
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await guarded.post("/daftar", headers=bearer)).status == 201
    assert (await guarded.post("/otp", headers=bearer)).status == 503
    assert (await guarded.post("/daftar")).status == 401  # refused by the guard: not counted
    exposition = generate_latest(health.registry).decode()
    assert 'gelombang_origin_requests_total{status_class="2xx",step="daftar"} 1.0' in exposition
    assert 'gelombang_origin_requests_total{status_class="5xx",step="otp"} 1.0' in exposition
    assert 'status_class="4xx"' not in exposition.replace("} 0.0", "")
    assert 'gelombang_origin_request_duration_seconds_count{step="daftar"} 1.0' in exposition
