"""The waiting page as the server renders it (in-process; the same page in Chromium:
tests/e2e/test_waiting_page.py): it stays a page when the process sheds load or Redis is away,
it joins without JavaScript by a plain form post, every state is told truthfully without a
script, and it says who runs the queue, where to check it, and what to have ready."""

from __future__ import annotations

import re
from html import unescape

from aiohttp.test_utils import TestClient

from queue_service.clock import ManualClock
from queue_service.errors import RateLimited, StoreUnavailable
from queue_service.http.appkeys import OVERLOAD, SERVICE
from queue_service.http.waiting_page import shed_page_bytes
from queue_service.overload import SHED_RETRY_AFTER_S
from queue_service.texts import messages
from tests.helpers.support import ADMIN, T0, admin_view, admit, join_ok, put_wave

ID = {"Accept-Language": "id-ID"}
EN = {"Accept-Language": "en-GB"}
NO_REDIRECTS = {"allow_redirects": False}
TRUST = {
    "operator_name": "Manajemen Pelaksana Program Kartu Prakerja",
    "official_url": "https://www.prakerja.go.id/",
    "have_ready": ["NIK dan nomor KK", "Foto KTP (JPEG/PNG, < 2 MB)", "HP untuk kode OTP"],
}


def text_of(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
    assert found, element_id
    return unescape(found.group(1))


def noscript_form(page: str) -> dict[str, str]:
    """The join form a phone without JavaScript sees: its action and hidden fields."""
    form = re.search(r'<form method="post" action="([^"]+)">(.*?)</form>', page)
    assert form, "no join form"
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form.group(2)))
    return {"action": form.group(1), **{k: unescape(v) for k, v in fields.items()}}


# -- under load the page stays a page ---------------------------------------------------------


async def test_a_shedding_process_answers_the_page_with_a_small_bilingual_page(
    client: TestClient,
) -> None:
    await put_wave(client, "w")
    client.app[OVERLOAD].max_lag_s = 0.0  # every sheddable request is shed
    for method, options in (("GET", {}), ("POST", {"data": {"registrant": "a"}})):
        response = await client.request(method, "/w/w", **options)
        assert response.status == 503
        assert response.headers["Retry-After"] == str(SHED_RETRY_AFTER_S)
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.read()
        assert body == shed_page_bytes()  # built once: the shedding path's cost
    page = body.decode()
    assert len(body) < 2_000
    for lang in ("id", "en"):
        assert messages()[lang]["busy_message"] in unescape(page)
    assert f'<meta http-equiv="refresh" content="{SHED_RETRY_AFTER_S}">' in page
    assert page.index('lang="id"') < page.index('lang="en"')  # Indonesian first
    api = await client.get("/api/v1/waves/w")  # the API still sheds in its JSON shape
    assert api.status == 503 and (await api.json())["error"]["code"] == "overloaded"
    assert (await client.get("/healthz")).status == 200  # never shed


async def test_redis_away_gives_the_same_page_and_an_unknown_wave_a_page_that_says_so(
    client: TestClient,
) -> None:
    await put_wave(client, "w")

    async def unavailable(wave: str) -> dict[str, object]:
        raise StoreUnavailable("Redis is not reachable.", retry_after_s=3)

    for path in ("/w/nope", "/w/Not-A-Wave!"):
        missing = await client.get(path)
        assert missing.status == 404 and missing.content_type == "text/html"
        assert "Gelombang tidak ditemukan" in await missing.text()
    client.app[SERVICE].info = unavailable  # type: ignore[method-assign]
    response = await client.get("/w/w")
    assert response.status == 503 and response.headers["Retry-After"] == "3"
    assert await response.read() == shed_page_bytes()


# -- joining without JavaScript ---------------------------------------------------------------


async def test_without_a_ticket_the_page_offers_a_form_that_joins_and_comes_back(
    client: TestClient,
) -> None:
    await put_wave(client, "w", **TRUST)
    page = await (await client.get("/w/w", headers=ID)).text()
    assert text_of(page, "state") == "Belum dalam antrean"  # not "Memuat…" forever
    assert "tidak menghilangkan tempat Anda" not in text_of(page, "tip")  # no place to keep
    assert 'http-equiv="refresh"' not in page  # nothing will change by waiting: press join
    form = noscript_form(page)
    assert form["action"] == "/w/w" and len(form["registrant"]) == 32

    joined = await client.post("/w/w", data={"registrant": form["registrant"]}, **NO_REDIRECTS)
    assert joined.status == 303 and joined.headers["Location"] == "/w/w"
    cookies = joined.headers.getall("Set-Cookie")
    assert [c.split(";")[0].split("=")[0] for c in cookies] == ["gelombang_ticket"] * 2
    assert {re.search(r"Path=([^;]+)", c).group(1) for c in cookies} == {  # type: ignore[union-attr]
        "/api/v1/waves/w",
        "/w/w",
    }
    page = await (await client.get("/w/w", headers=ID)).text()
    assert text_of(page, "state") == "Menunggu" and text_of(page, "position") == "1"
    assert re.search(r'<meta http-equiv="refresh" content="\d+">', page)
    assert "<form" not in page  # a place is held: no second join offered

    again = await client.post("/w/w", data={"registrant": "someone-else"}, **NO_REDIRECTS)
    assert again.status == 303 and "Set-Cookie" not in again.headers  # a double tap
    assert (await admin_view(client, "w"))["counts"]["waiting"] == 1  # one place, not two


async def test_the_same_form_posted_twice_from_two_tabs_holds_one_place(
    client: TestClient,
) -> None:
    await put_wave(client, "w")
    form = noscript_form(await (await client.get("/w/w")).text())
    client.session.cookie_jar.clear()
    first = await client.post("/w/w", data={"registrant": form["registrant"]}, **NO_REDIRECTS)
    client.session.cookie_jar.clear()
    second = await client.post("/w/w", data={"registrant": form["registrant"]}, **NO_REDIRECTS)
    assert first.status == 303 and second.status == 303
    assert "refused=already_queued" in second.headers["Location"]  # no ticket handed over
    assert (await admin_view(client, "w"))["counts"]["waiting"] == 1


async def test_a_refused_form_join_comes_back_to_a_page_that_says_why(
    client: TestClient, clock: ManualClock
) -> None:
    await put_wave(client, "later", opens_at=T0 + 3600, closes_at=T0 + 7200)
    early = await client.post("/w/later", data={"registrant": "a"}, **NO_REDIRECTS)
    assert early.headers["Location"] == "/w/later?refused=wave_not_open_yet"
    page = await (await client.get(early.headers["Location"], headers=EN)).text()
    assert text_of(page, "state") == "Not open yet"
    assert "The queue opens 18 March 2030, 01:46 WIB" in text_of(page, "message")
    assert re.search(r'<meta http-equiv="refresh" content="900">', page)  # look again later

    await put_wave(client, "w")
    await client.post("/admin/v1/waves/w/close", headers=ADMIN)
    closed = await client.post("/w/w", data={"registrant": "b"}, **NO_REDIRECTS)
    page = await (await client.get(closed.headers["Location"], headers=EN)).text()
    assert text_of(page, "state") == "Closed" and "<form" not in page
    assert text_of(page, "tip") == messages()["en"]["tip_done"]  # not "keep this page open"
    assert 'http-equiv="refresh"' not in page

    await put_wave(client, "nik", id_kind="nik")
    bad = await client.post("/w/nik", data={"registrant": "12"}, **NO_REDIRECTS)
    page = await (await client.get(bad.headers["Location"], headers=EN)).text()
    assert text_of(page, "state") == "Error" and "invalid_nik" in text_of(page, "message")


async def test_waves_the_form_cannot_join_say_what_is_needed(client: TestClient) -> None:
    await put_wave(client, "pow", pow_bits=8)
    page = await (await client.get("/w/pow", headers=EN)).text()
    assert text_of(page, "state") == "JavaScript needed" and "<form" not in page
    await put_wave(
        client,
        "verified",
        verified_joins=True,
        enqueue_jwks_url="http://127.0.0.1:9/.well-known/enqueue-jwks.json",
    )
    page = await (await client.get("/w/verified", headers=EN)).text()
    assert text_of(page, "state") == "Sign in first" and "<form" not in page
    # with the site's enqueue token in the link, the form carries it
    page = await (await client.get("/w/verified?enqueue_token=abc.def.ghi")).text()
    assert noscript_form(page)["enqueue_token"] == "abc.def.ghi"


async def test_a_ticket_in_the_link_is_shown_and_kept(client: TestClient) -> None:
    await put_wave(client, "w")
    await join_ok(client, "w", "first")
    second = await join_ok(client, "w", "second")
    client.session.cookie_jar.clear()
    response = await client.get(f"/w/w?ticket={second['ticket']}", headers=EN)
    page = await response.text()
    assert text_of(page, "position") == "2"
    kept = [c for c in response.headers.getall("Set-Cookie") if second["ticket"] in c]
    assert len(kept) == 2  # the page and the API keep the linked place from now on
    forged = await client.get("/w/w?ticket=1.x.forged", headers=EN)
    assert "Set-Cookie" not in forged.headers
    assert text_of(await forged.text(), "state") == "Not in the queue yet"


async def test_admitted_without_javascript_links_on_and_says_how_long_the_session_lasts(
    client: TestClient,
) -> None:
    await put_wave(client, "w", session_ttl_s=900)
    joined = await join_ok(client, "w", "a")
    await admit(client, "w")
    page = await (
        await client.get("/w/w", headers=EN, cookies={"gelombang_ticket": joined["ticket"]})
    ).text()
    assert text_of(page, "state") == "It's your turn!"
    link = re.search(r'<noscript><a class="btn go" href="([^"]+)">', page)
    assert link and "gelombang_token=" in unescape(link.group(1))
    message = text_of(page, "message")
    assert "Your registration session lasts about 15 minutes, until " in message
    assert 'http-equiv="refresh"' not in page  # the link is what to follow


# -- trust: who runs it, where to check it, what to have ready --------------------------------


async def test_the_page_names_the_operator_the_official_site_and_what_to_have_ready(
    client: TestClient,
) -> None:
    await put_wave(client, "w", **TRUST)
    page = await (await client.get("/w/w", headers=ID)).text()
    assert '<span class="brand">Manajemen Pelaksana Program Kartu Prakerja</span>' in page
    assert '<a href="https://www.prakerja.go.id/" rel="noopener">www.prakerja.go.id</a>' in page
    assert "tidak pernah meminta kata sandi, PIN, atau kode OTP" in page
    for item in TRUST["have_ready"]:
        assert f"<li>{item}</li>" in unescape(page)
    view = await admin_view(client, "w")
    assert view["wave"]["have_ready"] == TRUST["have_ready"]
    # the defaults are empty: nothing is claimed that the operator did not say
    await put_wave(client, "plain")
    plain = await (await client.get("/w/plain", headers=ID)).text()
    assert '<span class="brand">Gelombang</span>' in plain and "<li>" not in plain
    assert "tidak pernah meminta kata sandi" in plain  # true of every Gelombang page


async def test_trust_fields_are_checked(client: TestClient) -> None:
    for bad in (
        {"official_url": "javascript:alert(1)"},
        {"operator_name": "x" * 201},
        {"have_ready": "NIK"},
        {"have_ready": ["x"] * 11},
        {"have_ready": [""]},
    ):
        response = await client.put("/admin/v1/waves/w", json={**TRUST, **bad}, headers=ADMIN)
        assert response.status == 400, bad
        assert (await response.json())["error"]["code"] == "invalid_wave"


async def test_a_holder_is_never_offered_to_join_when_their_place_cannot_be_read(
    client: TestClient,
) -> None:
    """The ticket in the cookie may hold a place but cannot be read now. Reloading faster than
    the per-ticket limit: still a page (200, as refreshes always get), "busy, your place is
    kept", that looks again after the limit's Retry-After. Redis away: the "place is safe"
    page. Never a join button that would make a second place."""
    await put_wave(client, "w")
    joined = await join_ok(client, "w", "holder")
    cookies = {"gelombang_ticket": joined["ticket"]}
    service = client.app[SERVICE]

    async def limited(wave: str, ticket: str, ip: str) -> None:
        raise RateLimited("Too many requests; wait before trying again.", retry_after_s=7.5)

    async def away(wave: str, ticket: str, ip: str) -> None:
        raise StoreUnavailable("Redis is not reachable.", retry_after_s=1)

    service.status = limited  # type: ignore[method-assign]
    page = await client.get("/w/w", cookies=cookies, headers=EN)
    text = await page.text()
    assert page.status == 200 and text_of(text, "state") == "Busy"
    assert "Your place is kept" in text_of(text, "message") and "<form" not in text
    assert '<meta http-equiv="refresh" content="8">' in text  # not before Retry-After
    posted = await client.post("/w/w", cookies=cookies, data={"registrant": "x"}, **NO_REDIRECTS)
    assert posted.status == 303 and "Set-Cookie" not in posted.headers  # no second place

    service.status = away  # type: ignore[method-assign]
    for method, options in (("GET", {}), ("POST", {"data": {"registrant": "x"}})):
        response = await client.request(method, "/w/w", cookies=cookies, **options)
        assert response.status == 503 and response.headers["Retry-After"] == "1"
        assert await response.read() == shed_page_bytes()
    assert (await admin_view(client, "w"))["counts"]["waiting"] == 1


async def test_a_page_refused_before_the_opening_offers_to_join_once_it_opens(
    client: TestClient, clock: ManualClock
) -> None:
    """The page reloads itself with the same address (`?refused=wave_not_open_yet`): once the
    wave opens it must offer the button, not repeat "not open yet" for ever."""
    await put_wave(client, "later", opens_at=T0 + 60, closes_at=T0 + 7200)
    early = await client.post("/w/later", data={"registrant": "a"}, **NO_REDIRECTS)
    assert early.headers["Location"] == "/w/later?refused=wave_not_open_yet"
    clock.set(T0 + 61)
    page = await (await client.get(early.headers["Location"], headers=EN)).text()
    assert text_of(page, "state") == "Not in the queue yet" and noscript_form(page)
    busy = await (await client.get("/w/later?refused=busy", headers=EN)).text()
    assert "Wait a few seconds, then press the button again." in text_of(busy, "message")
    assert noscript_form(busy)
