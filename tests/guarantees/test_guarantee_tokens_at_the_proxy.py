"""Guarantee 8 at a reverse proxy: the verify route (nginx auth_request, Caddy forward_auth,
Traefik forwardAuth) refuses what the origin guard refuses (no token, forged, expired, another
wave's, a session that ended, a one-time token from a second browser) and says where to send
the browser; lets a valid token through with the registrant's subject; and checks a token it
has seen before without verifying its signature again."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from unittest import mock

import jwt
import pytest
from aiohttp.test_utils import TestClient

from queue_service import verify as verify_module
from queue_service.clock import ManualClock
from queue_service.errors import StoreUnavailable
from queue_service.tokens import KeyRing, TokenIssuer, TokenVerifier
from queue_service.verify import REVOCATION_MIRROR_S, AdmissionCheck, Admitted
from tests.helpers.support import admit, join_ok, poll_ok, put_wave

VERIFY = "/api/v1/waves/{wave}/verify"


async def admitted_token(client: TestClient, wave: str, registrant: str = "r1") -> str:
    ticket = (await join_ok(client, wave, registrant))["ticket"]
    await admit(client, wave)
    view = await poll_ok(client, wave, ticket)
    assert view["state"] == "admitted", view
    client.session.cookie_jar.clear()
    return str(view["token"])


async def ask(
    client: TestClient, wave: str, headers: dict[str, str] | None = None, query: str = ""
) -> tuple[int, dict[str, Any], Any]:
    response = await client.get(VERIFY.format(wave=wave) + query, headers=headers or {},
                                allow_redirects=False)  # fmt: skip
    body = await response.read()
    client.session.cookie_jar.clear()  # each call is its own browser: it sends what it is given
    return response.status, dict(response.headers), body


def cookie(token: str, binding: str | None = None) -> dict[str, str]:
    value = f"gelombang_admission={token}"
    return {"Cookie": value + (f"; gelombang_binding={binding}" if binding else "")}


async def test_no_token_is_refused_with_where_to_send_the_browser(client: TestClient) -> None:
    await put_wave(client, "w")
    status, headers, body = await ask(client, "w")
    assert status == 401 and b"missing_token" in body
    assert headers["X-Gelombang-Waiting-Room"] == "/w/w"
    assert headers["X-Gelombang-Reason"] == "missing_token"
    # Caddy and Traefik hand the answer to the browser: a page gets a redirect instead
    status, headers, _ = await ask(client, "w", {"Accept": "text/html"}, "?proxy=forward")
    assert status == 302 and headers["Location"] == "/w/w"
    assert (await ask(client, "w", query="?proxy=apache"))[0] == 400
    assert (await ask(client, "nope"))[0] == 404


async def test_a_valid_token_passes_with_the_subject_from_cookie_header_or_url(
    client: TestClient,
) -> None:
    await put_wave(client, "w")
    token = await admitted_token(client, "w")
    subject = jwt.decode(token, options={"verify_signature": False})["sub"]
    for headers in (cookie(token), {"Authorization": f"Bearer {token}"}):
        status, answer, _ = await ask(client, "w", headers)
        assert status == 200 and answer["X-Gelombang-Subject"] == subject
        assert "X-Gelombang-Set-Cookie" not in answer
    # from the waiting room's redirect: the token in the browser's URL becomes a cookie
    original = {"X-Original-URI": f"/daftar?step=1&gelombang_token={token}"}
    status, answer, _ = await ask(client, "w", original)
    assert status == 200 and answer["X-Gelombang-Set-Cookie"].startswith(
        f"gelombang_admission={token}; Path=/;"
    )
    forwarded = {"X-Forwarded-Uri": f"/daftar?step=1&gelombang_token={token}"}
    status, answer, _ = await ask(client, "w", forwarded, "?proxy=forward")
    assert status == 302 and answer["Location"] == "/daftar?step=1"
    assert answer["Set-Cookie"].startswith(f"gelombang_admission={token};")


async def test_forged_expired_and_other_waves_tokens_are_refused(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, "w", session_ttl_s=60)
    await put_wave(client, "other")
    token = await admitted_token(client, "w")
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    for bad in (forged, "not-a-jwt"):
        status, answer, body = await ask(client, "w", cookie(bad))
        assert status == 401 and answer["X-Gelombang-Reason"] == "invalid_token", body
    assert (await ask(client, "other", cookie(token)))[0] == 401
    assert (await ask(client, "w", cookie(token)))[0] == 200
    clock.advance(60 + 10)  # past exp and the leeway: refused even though it was cached
    status, answer, _ = await ask(client, "w", cookie(token))
    assert status == 401 and answer["X-Gelombang-Reason"] == "invalid_token"


async def test_a_session_that_ended_is_refused_within_the_mirror_interval(
    client: TestClient,
) -> None:
    await put_wave(client, "w")
    token = await admitted_token(client, "w")
    assert (await ask(client, "w", cookie(token)))[0] == 200
    ended = await client.post(
        "/api/v1/waves/w/complete", headers={"Authorization": f"Bearer {token}"}
    )
    assert ended.status == 204
    await asyncio.sleep(REVOCATION_MIRROR_S + 0.1)
    status, answer, _ = await ask(client, "w", cookie(token))
    assert status == 401 and answer["X-Gelombang-Reason"] == "session_ended"


async def test_a_one_time_token_works_from_the_first_browser_only(client: TestClient) -> None:
    await put_wave(client, "w", one_time_tokens=True)
    token = await admitted_token(client, "w")
    original = {"X-Original-URI": f"/daftar?gelombang_token={token}"}
    status, first, _ = await ask(client, "w", original)
    assert status == 200
    binding = first["X-Gelombang-Binding"]
    assert first["X-Gelombang-Set-Binding"].startswith(f"gelombang_binding={binding};")
    assert (await ask(client, "w", cookie(token, binding)))[0] == 200
    # a second browser: the link shared, or the cookie copied without the binding
    for headers in (original, cookie(token), cookie(token, "another-browser")):
        status, answer, _ = await ask(client, "w", headers)
        assert status == 401 and answer["X-Gelombang-Reason"] == "token_already_used"


async def test_a_token_seen_before_is_not_verified_again(client: TestClient) -> None:
    await put_wave(client, "w")
    token = await admitted_token(client, "w")
    with mock.patch.object(TokenVerifier, "verify", autospec=True,
                           side_effect=TokenVerifier.verify) as verify:  # fmt: skip
        for _ in range(20):
            assert (await ask(client, "w", cookie(token)))[0] == 200
    assert verify.call_count == 1


async def test_whatever_a_proxy_or_browser_sends_is_a_clear_answer_never_a_5xx(
    client: TestClient,
) -> None:
    await put_wave(client, "w", one_time_tokens=True)
    token = await admitted_token(client, "w")
    # a made-up binding is no binding: the token binds to a fresh one, given back
    status, answer, _ = await ask(client, "w", cookie(token, "not a binding!"))
    assert status == 200 and answer["X-Gelombang-Binding"] != "not a binding!"
    odd = [
        {"X-Original-URI": "//["},
        {"X-Forwarded-Uri": "/daftar?gelombang_token=%ff%fe"},
        {"Authorization": "Bearer "},
        {"Cookie": "gelombang_admission=é; gelombang_binding=" + "x" * 5000},
        {"Cookie": f'gelombang_admission="{token}"; gelombang_binding=not a binding!'},
    ]
    for headers in odd:
        for query in ("", "?proxy=forward"):
            status, _, body = await ask(client, "w", headers, query)
            assert status in (200, 302, 401), (headers, status, body)


class _RedisAway:
    """A store whose Redis has gone (every read raises StoreUnavailable), after one good read."""

    def __init__(self) -> None:
        self.reads = 0

    async def revoked_after(self, wave: str, position: str) -> list[tuple[str, str]]:
        self.reads += 1
        if self.reads > 1:
            raise StoreUnavailable("gone", retry_after_s=2)
        return [("1-0", "ended-session")]


async def test_while_redis_is_away_checks_go_on_from_the_last_revocations_for_a_while(
    keyring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions end only through Redis: while it is unreachable nothing new is revoked, so the
    verify route keeps answering from its copy, for REVOCATION_STALE_LIMIT_S, then 503s."""
    seconds = [1000.0]
    monkeypatch.setattr(verify_module.time, "monotonic", lambda: seconds[0])
    store = _RedisAway()
    check = AdmissionCheck(store, TokenVerifier.from_keyring(keyring))  # type: ignore[arg-type]
    issuer = TokenIssuer(keyring)
    now = time.time()
    token = issuer.issue(wave="w", subject="s", ticket=1, incarnation="i", stamp="t",
                         admitted_at=now, expires_at=now + 600)  # fmt: skip
    assert isinstance(await check.check("w", token, None, 600), Admitted)
    seconds[0] += REVOCATION_MIRROR_S + 1  # due for a read: Redis is away
    assert isinstance(await check.check("w", token, None, 600), Admitted)
    assert isinstance(await check.check("w", token, None, 600), Admitted)
    assert store.reads == 2  # a failed read is not tried again at every check
    seconds[0] += verify_module.REVOCATION_STALE_LIMIT_S
    with pytest.raises(StoreUnavailable):
        await check.check("w", token, None, 600)
