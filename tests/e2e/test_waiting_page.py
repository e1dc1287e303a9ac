"""The waiting-room page (`GET /w/{wave}`) in real headless Chromium (driven by Playwright)
against the real queue service and a real Redis: what a registrant on a small phone actually
sees and does."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser

from queue_service.app import create_app
from queue_service.http.appkeys import KEYRING, OVERLOAD
from queue_service.settings import Settings
from queue_service.tokens import TokenVerifier
from tests.helpers.pages import Exchange, Tab, launch_chromium, open_tab, wait_until
from tests.helpers.support import NEVER_SHED

# One Chromium for the whole module (each test opens its own tab on its own service, so no
# cookies or storage are shared), hence one event loop for the module.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WAVE = "prakerja-72"
TITLE = "Gelombang 72"
OTHERS_AHEAD = 5
PHONE_WIDTH, PHONE_HEIGHT = 320, 640  # a small, cheap Android phone

# What the page shows, read in one round trip.
SNAPSHOT = """JSON.stringify({
  state: document.getElementById('state').dataset.state,
  badge: document.getElementById('state').textContent,
  title: document.getElementById('title').textContent,
  position: document.getElementById('position').textContent,
  ahead: document.getElementById('ahead').textContent,
  eta: document.getElementById('eta').textContent,
  message: document.getElementById('message').textContent,
  net: document.getElementById('net').textContent,
  updated: document.getElementById('updated').textContent,
  progress: Number(document.getElementById('progress').getAttribute('aria-valuenow')),
  live: document.getElementById('live').textContent,
  lang: document.documentElement.lang,
  scrollWidth: document.documentElement.scrollWidth
})"""
# Cumulative layout shift not caused by the person's own taps (0 = nothing jumped around).
LAYOUT_SHIFT = """new Promise(done => {
  let sum = 0;
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) if (!e.hadRecentInput) sum += e.value;
  }).observe({type: 'layout-shift', buffered: true});
  setTimeout(() => done(sum), 200);
})"""


def in_state(state: str) -> str:
    return f"document.getElementById('state').dataset.state === {json.dumps(state)}"


WAITING = in_state("waiting")
# The fixture's wave is paused, so people wait in line and nobody is admitted until a test says.
IN_LINE = in_state("paused")


@dataclass
class Origin:
    """A tiny registration server on loopback that records the tokens it is sent."""

    url: str
    tokens: list[str] = field(default_factory=list)


@dataclass
class Service:
    base: str
    app: web.Application
    http: aiohttp.ClientSession
    origin: Origin

    def page_url(self, query: str = "", wave: str = WAVE) -> str:
        return f"{self.base}/w/{wave}{query}"

    async def put_wave(self, wave: str = WAVE, **changes: Any) -> None:
        now = time.time()
        config = {
            "title": TITLE,
            "opens_at": now - 60,
            "closes_at": now + 3600,
            "admit_rate": 1,  # a short wait, so the page polls about every second
            "origin_url": self.origin.url,
            **changes,
        }
        async with self.http.put(
            f"{self.base}/admin/v1/waves/{wave}", json=config, headers=ADMIN
        ) as resp:
            assert resp.status in (200, 201), await resp.text()

    async def control(self, action: str) -> None:
        async with self.http.post(
            f"{self.base}/admin/v1/waves/{WAVE}/{action}", headers=ADMIN
        ) as resp:
            assert resp.status == 200, await resp.text()

    async def counts(self) -> dict[str, int]:
        async with self.http.get(f"{self.base}/admin/v1/waves/{WAVE}", headers=ADMIN) as resp:
            assert resp.status == 200, await resp.text()
            counts: dict[str, int] = (await resp.json())["counts"]
            return counts

    async def join_others(self, n: int) -> None:
        for i in range(n):
            async with self.http.post(
                f"{self.base}/api/v1/waves/{WAVE}/join", json={"registrant": f"other-{i}"}
            ) as resp:
                assert resp.status == 201, await resp.text()

    async def admit_everyone(self) -> None:
        await self.put_wave(admit_rate=50)
        await self.control("resume")


@pytest_asyncio.fixture(loop_scope="module")
async def origin() -> AsyncIterator[Origin]:
    recorded = Origin(url="")

    async def register(request: web.Request) -> web.Response:
        recorded.tokens.append(request.query.get("gelombang_token", ""))
        return web.Response(
            text="<!doctype html><link rel=icon href='data:,'><h1>Pendaftaran</h1>",
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_get("/register", register)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorded.url = f"http://127.0.0.1:{runner.addresses[0][1]}/register?source=gelombang"
    yield recorded
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def service(redis_url: str, state_dir: Path, origin: Origin) -> AsyncIterator[Service]:
    """The real queue service in-process, with a paused wave that has people ahead, so the
    page's registrant waits until the test admits everyone."""
    # the service shares its event loop with the test and the browser driver: a loaded
    # machine's lag must not make it shed the page's requests (tests/e2e/test_guarantee_overload.py)
    settings = Settings(
        redis_url=redis_url,
        admin_token=ADMIN_TOKEN,
        state_dir=state_dir,
        **NEVER_SHED,
    )
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    async with aiohttp.ClientSession() as http:
        svc = Service(f"http://127.0.0.1:{runner.addresses[0][1]}", app, http, origin)
        await svc.put_wave()
        await svc.control("pause")
        await svc.join_others(OTHERS_AHEAD)
        yield svc
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared_browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="module")
async def browser(shared_browser: Browser) -> AsyncIterator[Browser]:
    """The module's browser; the test's tabs are closed after it."""
    yield shared_browser
    for context in shared_browser.contexts:
        await context.close()


async def open_page(browser: Browser, url: str, locale: str) -> Tab:
    page = await open_tab(browser, width=PHONE_WIDTH, height=PHONE_HEIGHT, locale=locale)
    await page.page.goto(url)
    return page


async def snapshot(page: Tab) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await page.page.evaluate(SNAPSHOT))
    return data


async def wait_for(page: Tab, expression: str, *, timeout_s: float = 10.0) -> None:
    await wait_until(page.page, expression, timeout_s=timeout_s)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header chunk."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def assert_no_page_errors(page: Tab, expected: tuple[int, ...] = (401,)) -> None:
    """No JS errors; the only failed requests are answers the page expects (by default the
    401 "no ticket yet" before its first join)."""
    assert page.console_errors == []
    allowed = tuple(f"status of {status} " for status in expected)
    unexpected = [e for e in page.network_errors if not any(a in e for a in allowed)]
    assert unexpected == []


async def test_waiting_page_shows_position_and_eta_in_indonesian_then_english(
    service: Service, browser: Browser
) -> None:
    page = await open_page(browser, service.page_url(), "id-ID")
    await wait_for(page, IN_LINE)
    shown = await snapshot(page)
    assert shown["lang"] == "id"
    assert shown["title"] == TITLE
    assert shown["badge"] == "Dijeda"  # paused: the place is kept, no ETA counts down
    assert shown["position"] == str(OTHERS_AHEAD + 1)
    assert shown["ahead"] == str(OTHERS_AHEAD)
    assert shown["eta"] == "dijeda" and "dijeda sementara" in shown["message"]

    await service.put_wave(admit_rate=0.01)  # 5 ahead -> about 8 minutes: an ETA in minutes
    await service.control("resume")
    await wait_for(page, WAITING, timeout_s=20)
    shown = await snapshot(page)
    assert shown["badge"] == "Menunggu"
    position = int(shown["position"])
    assert position <= OTHERS_AHEAD + 1 and shown["ahead"] == str(position - 1)
    assert re.fullmatch(r"± \d+ menit", shown["eta"]), shown["eta"]  # counts down locally
    assert shown["updated"] != "—"
    assert f"Posisi Anda {position}." in shown["live"]  # for screen readers
    assert shown["scrollWidth"] <= PHONE_WIDTH
    # What the phone's screen shows, as pixels: the whole page is one phone wide.
    assert png_size(await page.page.screenshot()) == (PHONE_WIDTH, PHONE_HEIGHT)
    assert png_size(await page.page.screenshot(full_page=True))[0] == PHONE_WIDTH

    await page.page.click("#lang")
    shown = await snapshot(page)
    assert shown["lang"] == "en"
    assert shown["badge"] == "Waiting"
    assert shown["position"] == str(position)
    assert re.fullmatch(r"about (1 minute|\d+ minutes)", shown["eta"]), shown["eta"]
    assert await page.page.evaluate("document.body.innerText.includes('Your position')")
    assert shown["scrollWidth"] <= PHONE_WIDTH

    await page.page.reload()  # the choice of language is remembered
    await wait_for(page, WAITING)
    assert (await snapshot(page))["badge"] == "Waiting"
    assert_no_page_errors(page)


PAGE_BUDGET_BYTES = 32_000  # both languages' texts inlined, no other request needed
WIRE_BUDGET_BYTES = 12_000  # gzip: a few round trips on 2G


async def test_page_is_small_self_contained_and_talks_only_to_its_own_service(
    service: Service, browser: Browser
) -> None:
    async with service.http.get(service.page_url()) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        html = await resp.read()
    assert len(html) < PAGE_BUDGET_BYTES
    async with (
        aiohttp.ClientSession(auto_decompress=False) as raw,
        raw.get(service.page_url(), headers={"Accept-Encoding": "gzip"}) as resp,
    ):
        assert resp.headers["Content-Encoding"] == "gzip"
        assert len(await resp.read()) < WIRE_BUDGET_BYTES
    assert f"const WAVE = {json.dumps(WAVE)};".encode() in html  # the wave id substituted
    assert b"__WAVE_ID_JSON__" not in html

    page = await open_page(browser, service.page_url(), "id-ID")
    await wait_for(page, IN_LINE)
    urls = [e.url for e in page.exchanges if not e.url.startswith("data:")]
    assert urls and all(url.startswith(service.base + "/") for url in urls), urls
    assert_no_page_errors(page)


async def test_default_language_follows_the_browser_with_indonesian_as_fallback(
    service: Service, browser: Browser
) -> None:
    expected = {"en-US": "en", "ms-MY": "id", "fr-FR": "id"}
    for locale, lang in expected.items():
        page = await open_page(browser, service.page_url(f"?registrant=lang-{locale}"), locale)
        await wait_for(page, IN_LINE)
        assert (await snapshot(page))["lang"] == lang, locale
        assert_no_page_errors(page)
        await page.close()


async def test_reload_keeps_the_same_ticket_and_never_a_worse_place(
    service: Service, browser: Browser
) -> None:
    page = await open_page(browser, service.page_url(), "id-ID")
    await wait_for(page, IN_LINE)
    before = await snapshot(page)
    status_url = f"{service.base}/api/v1/waves/{WAVE}/status"
    cookies = await page.context.cookies(status_url)
    ticket = [c["value"] for c in cookies if c["name"] == "gelombang_ticket"]
    assert len(ticket) == 1

    for _ in range(2):
        await page.page.reload()
        await wait_for(page, IN_LINE)
        after = await snapshot(page)
        assert int(after["position"]) <= int(before["position"])
        again = await page.context.cookies(status_url)
        assert [c["value"] for c in again if c["name"] == "gelombang_ticket"] == ticket
    assert (await service.counts())["waiting"] == OTHERS_AHEAD + 1  # one place, not three
    assert_no_page_errors(page)


async def test_a_lost_cookie_does_not_lose_the_place(service: Service, browser: Browser) -> None:
    page = await open_page(browser, service.page_url(), "id-ID")
    await wait_for(page, IN_LINE)
    position = (await snapshot(page))["position"]
    joins = [e for e in page.exchanges if e.url.endswith("/join")]
    assert [e.status for e in joins] == [201]

    await page.context.clear_cookies()  # the open page still knows its ticket and sends it itself
    polls = len(status_requests(page))
    await until(lambda: any(e.status for e in status_requests(page)[polls:]))
    assert status_requests(page)[polls].status == 200

    await page.context.clear_cookies()
    await page.page.reload()  # no cookie: the ticket kept on the phone proves the place
    await wait_for(page, IN_LINE)
    joins = [e for e in page.exchanges if e.url.endswith("/join")]
    assert [e.status for e in joins] == [201]  # no second join: the place was never lost
    assert (await snapshot(page))["position"] == position
    assert (await service.counts())["waiting"] == OTHERS_AHEAD + 1
    assert_no_page_errors(page)


async def test_lost_connection_shows_reconnecting_and_keeps_the_place(
    service: Service, browser: Browser
) -> None:
    page = await open_page(browser, service.page_url(), "en-US")
    await wait_for(page, IN_LINE)
    position = (await snapshot(page))["position"]

    await page.context.set_offline(True)
    await wait_for(page, "document.getElementById('net').textContent.includes('Reconnecting')")
    offline = await snapshot(page)
    assert offline["state"] == "paused"
    assert offline["position"] == position  # the place stays on screen

    await page.context.set_offline(False)
    await wait_for(page, "document.getElementById('net').textContent === ''", timeout_s=15)
    assert (await snapshot(page))["position"] == position
    assert (await service.counts())["waiting"] == OTHERS_AHEAD + 1
    assert page.console_errors == []


async def test_admission_shows_the_admitted_state_and_redirects_with_a_valid_token(
    service: Service, browser: Browser
) -> None:
    page = await open_page(browser, service.page_url(), "id-ID")
    await wait_for(page, IN_LINE)
    start = (await snapshot(page))["progress"]
    status_url = f"{service.base}/api/v1/waves/{WAVE}/status"
    cookies = await page.context.cookies(status_url)
    [ticket] = [c["value"] for c in cookies if c["name"] == "gelombang_ticket"]
    ticket_seq = int(ticket.split(".")[0])

    await service.admit_everyone()
    await wait_for(page, in_state("admitted"))
    shown = await snapshot(page)
    assert shown["badge"] == "Giliran Anda!"
    # how long the registration session lasts, and until when (the token's exp)
    assert "Sesi pendaftaran Anda berlaku ± 15 menit, sampai " in shown["message"]
    assert shown["progress"] == 100 >= start  # the bar only moves forward
    assert shown["scrollWidth"] <= PHONE_WIDTH
    button = await page.page.evaluate(
        "(() => { const a = document.getElementById('go'); const r = a.getBoundingClientRect();"
        " return {href: a.href, hidden: a.hidden, height: r.height}; })()"
    )
    assert not button["hidden"] and button["height"] >= 48  # a large tap target
    assert "gelombang_token=" in button["href"]
    layout_shift = await page.page.evaluate(LAYOUT_SHIFT)

    await page.page.wait_for_url(lambda url: url.startswith(service.origin.url), timeout=8000)
    assert "gelombang_token=" in page.page.url
    assert len(service.origin.tokens) == 1
    token = service.origin.tokens[0]
    assert button["href"].endswith(f"gelombang_token={token}")  # what the button offered
    verifier = TokenVerifier.from_keyring(service.app[KEYRING], issuer="gelombang")
    claims = verifier.verify(token, wave=WAVE)  # raises unless signed by the service
    assert claims.wave == WAVE
    assert claims.ticket == ticket_seq  # this registrant's own place, not someone else's
    assert claims.expires_at > time.time()
    assert layout_shift < 0.05
    assert_no_page_errors(page)


async def test_leave_gives_the_place_up_and_a_reload_does_not_rejoin(
    service: Service, browser: Browser
) -> None:
    page = await open_page(browser, service.page_url("?registrant=nik-3174051203900001"), "id-ID")
    await wait_for(page, IN_LINE)
    assert (await service.counts())["waiting"] == OTHERS_AHEAD + 1

    await page.page.click("#leave")
    await wait_for(page, "!document.getElementById('confirm').hidden")
    assert (await service.counts())["left"] == 0  # nothing happens before confirming
    await page.page.click("#leave-yes")
    await wait_for(page, in_state("left"))
    after_leave = await service.counts()
    assert after_leave["left"] == 1

    await page.page.reload()
    await wait_for(page, in_state("left"))
    await page.page.evaluate("new Promise(r => setTimeout(r, 1500))")  # a poll would have run
    assert await service.counts() == after_leave  # the reload did not quietly rejoin

    await page.page.click("#retry")  # joining again puts the person at the back, behind the others
    await wait_for(page, IN_LINE)
    assert int((await snapshot(page))["position"]) > OTHERS_AHEAD
    assert_no_page_errors(page)


async def test_page_waits_for_the_opening_joins_the_prequeue_then_is_admitted(
    service: Service, browser: Browser
) -> None:
    """Arriving too early: told when the queue opens, joins by itself when it does (no
    refresh), is told the pre-queue order is drawn at opening, then admitted."""
    later = "prakerja-73"
    await service.put_wave(wave=later, opens_at=time.time() + 4, prequeue_s=2)
    page = await open_page(browser, service.page_url(wave=later), "id-ID")

    await wait_for(page, in_state("notyet"))
    shown = await snapshot(page)
    assert shown["message"].startswith("Gelombang belum dibuka. Antrean dibuka ")
    assert shown["position"] == "—"

    await wait_for(page, in_state("prequeue"), timeout_s=6)
    shown = await snapshot(page)
    assert shown["message"].startswith(
        "Anda sudah masuk antrean awal; urutan diacak saat gelombang dibuka. Gelombang dibuka "
    )
    assert shown["scrollWidth"] <= PHONE_WIDTH

    await wait_for(page, in_state("admitted"), timeout_s=10)
    href = await page.page.evaluate("document.getElementById('go').href")
    assert href.startswith(service.origin.url) and "gelombang_token=" in href
    assert_no_page_errors(page, expected=(401, 409))  # 409: wave_not_open_yet


ENDINGS = {
    "closed": "This wave is closed. Thank you for your patience.",
    "full": "This wave's quota is full. Watch for the next wave's announcement.",
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_a_closed_or_full_wave_is_shown_and_polling_stops(
    service: Service, browser: Browser, ending: str
) -> None:
    page = await open_page(browser, service.page_url(), "en-US")
    await wait_for(page, IN_LINE)

    if ending == "closed":
        await service.control("close")
    else:  # the people ahead use up the quota
        await service.put_wave(admit_rate=50, quota=OTHERS_AHEAD)
        await service.control("resume")
    await wait_for(page, in_state(ending))
    shown = await snapshot(page)
    assert shown["message"] == ENDINGS[ending]
    assert await page.page.evaluate("document.getElementById('leave').hidden")
    polls = len(status_requests(page))
    await page.page.evaluate("new Promise(r => setTimeout(r, 2500))")  # 2+ poll intervals
    assert len(status_requests(page)) == polls
    assert_no_page_errors(page)


async def test_rate_limited_page_honours_retry_after_and_keeps_the_place(
    service: Service, browser: Browser
) -> None:
    # One status poll per 3 s per ticket, while the page is told to poll every second.
    limits = {"status_per_ticket": {"rate_per_s": 1 / 3, "burst": 2}}
    await service.put_wave(rate_limits=limits)
    page = await open_page(browser, service.page_url(), "en-US")
    await wait_for(page, IN_LINE)
    position = (await snapshot(page))["position"]

    await wait_for(page, "document.getElementById('net').textContent.includes('busy')")
    shown = await snapshot(page)
    assert shown["state"] == "paused" and shown["position"] == position
    await wait_for(page, "document.getElementById('net').textContent === ''", timeout_s=15)

    polls = status_requests(page)
    limited = [i for i, e in enumerate(polls) if e.status == 429]
    assert limited, [e.status for e in polls]
    first = limited[0]
    retry_after = float(polls[first].headers["retry-after"])
    answered = polls[first].answered_at
    assert retry_after >= 1 and answered is not None
    assert polls[first + 1].sent_at >= answered + retry_after - 0.05  # not a moment earlier
    assert page.console_errors == []


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def status_requests(page: Tab) -> list[Exchange]:
    return [e for e in page.exchanges if e.url.endswith("/status") and e.method == "GET"]


# -- every state told truthfully ------------------------------------------------------------


async def join_as(service: Service, registrant: str, wave: str = WAVE) -> dict[str, Any]:
    async with service.http.post(
        f"{service.base}/api/v1/waves/{wave}/join", json={"registrant": registrant}
    ) as resp:
        assert resp.status in (200, 201), await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def poll_as(service: Service, ticket: str, wave: str = WAVE) -> dict[str, Any]:
    async with service.http.get(
        f"{service.base}/api/v1/waves/{wave}/status", headers={"X-Queue-Ticket": ticket}
    ) as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def test_a_completed_registration_is_a_final_screen_without_a_rejoin_button(
    service: Service, browser: Browser
) -> None:
    page = await open_page(browser, service.page_url("?registrant=done-1"), "id-ID")
    await wait_for(page, IN_LINE)
    ticket = await page.page.evaluate(f"localStorage.getItem('gelombang.{WAVE}.ticket')")
    # admitted, the registration finished elsewhere (the origin completed the session)
    await service.admit_everyone()
    token = None
    for _ in range(100):
        token = (await poll_as(service, ticket)).get("token")
        if token:
            break
        await asyncio.sleep(0.1)
    assert token
    async with service.http.post(
        f"{service.base}/api/v1/waves/{WAVE}/complete",
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 204
    page = await open_page(browser, service.page_url("?registrant=done-1"), "id-ID")
    await page.page.evaluate(
        f"localStorage.setItem('gelombang.{WAVE}.ticket', {json.dumps(ticket)})"
    )
    await page.page.reload()
    await wait_for(page, in_state("completed"))
    shown = await snapshot(page)
    assert shown["badge"] == "Selesai" and "sudah selesai" in shown["message"]
    hidden = "['retry','leave','go'].every(id => document.getElementById(id).hidden)"
    assert await page.page.evaluate(hidden), "a final screen offers no way to queue again"
    await page.page.evaluate("new Promise(r => setTimeout(r, 1500))")
    polls = len(status_requests(page))
    await page.page.evaluate("new Promise(r => setTimeout(r, 1500))")
    assert len(status_requests(page)) == polls  # and it stopped polling
    assert_no_page_errors(page, expected=(401, 409))  # 409: already_completed on the first load


async def test_an_expired_place_offers_a_working_join_at_the_back(
    service: Service, browser: Browser
) -> None:
    page = await open_page(browser, service.page_url("?registrant=lapsed-1"), "en-US")
    await wait_for(page, IN_LINE)
    ticket = await page.page.evaluate(f"localStorage.getItem('gelombang.{WAVE}.ticket')")
    async with service.http.post(
        f"{service.base}/api/v1/waves/{WAVE}/leave", headers={"X-Queue-Ticket": ticket}
    ) as resp:  # the place lapses (here: given up from another tab)
        assert resp.status == 204
    await service.join_others(0)
    await wait_for(page, in_state("expired"), timeout_s=15)
    shown = await snapshot(page)
    assert "at the back" in shown["message"]
    await page.page.click("#retry")
    await wait_for(page, IN_LINE)
    # a new place at the back: behind the others and behind its own old, given-up ticket
    # (a position counts tickets ahead that left until admission passes them: an upper bound)
    assert int((await snapshot(page))["position"]) == OTHERS_AHEAD + 2
    assert_no_page_errors(page)


async def test_the_page_says_honestly_when_the_close_comes_before_the_holders_turn(
    service: Service, browser: Browser
) -> None:
    await service.put_wave(closes_at=time.time() + 120, admit_rate=0.01)
    await service.control("resume")
    page = await open_page(browser, service.page_url(), "en-US")
    await wait_for(page, in_state("closing"))
    shown = await snapshot(page)
    assert shown["badge"] == "Closing soon"
    assert shown["message"].startswith("By the current estimate this wave closes (")
    assert "You keep your place" in shown["message"] and shown["position"] != "—"
    assert_no_page_errors(page)


async def test_a_place_held_in_another_browser_is_not_handed_over(
    service: Service, browser: Browser
) -> None:
    first = await open_page(browser, service.page_url("?registrant=3174051203900001"), "en-US")
    await wait_for(first, IN_LINE)
    second = await open_page(browser, service.page_url("?registrant=3174051203900001"), "en-US")
    await wait_for(second, in_state("elsewhere"))
    assert "another browser or on another device" in (await snapshot(second))["message"]
    assert (
        await second.page.evaluate(f"localStorage.getItem('gelombang.{WAVE}.ticket')") is None
    )  # nothing of the first browser's place reached the second
    assert_no_page_errors(second, expected=(409,))


async def test_without_javascript_the_page_shows_the_real_state_and_refreshes_itself(
    service: Service, browser: Browser
) -> None:
    joined = await join_as(service, "no-js-1")
    tab = await open_tab(browser, width=PHONE_WIDTH, height=PHONE_HEIGHT, locale="id-ID",
                         javascript=False)  # fmt: skip
    await tab.context.add_cookies(
        [{"name": "gelombang_ticket", "value": joined["ticket"], "url": service.page_url()}]
    )
    await tab.page.goto(service.page_url())
    notice = tab.page.locator(".nojs")
    assert await notice.is_visible()
    box = await notice.bounding_box()
    assert box is not None and box["y"] + box["height"] < PHONE_HEIGHT / 3  # at the top
    assert "JavaScript tidak aktif" in await notice.text_content()
    assert await tab.page.text_content("#state") == "Dijeda"
    assert await tab.page.text_content("#position") == str(OTHERS_AHEAD + 1)
    async with service.http.get(
        service.page_url(), cookies={"gelombang_ticket": joined["ticket"]}
    ) as resp:
        html = await resp.text()
        tag = resp.headers["ETag"]
    view = await poll_as(service, joined["ticket"])
    seconds = max(5, view["poll_after_ms"] // 1000)
    assert f'<meta http-equiv="refresh" content="{seconds}">' in html
    # unchanged since the last visit: nothing is sent again. The page may really have changed
    # in between (its refresh is the poll interval the queue computes at each visit; seen
    # once on a loaded machine): then it comes whole with a new tag, and a visit with that
    # tag is a 304.
    for _ in range(3):
        async with service.http.get(
            service.page_url(),
            cookies={"gelombang_ticket": joined["ticket"]},
            headers={"If-None-Match": tag},
        ) as resp:
            if resp.status == 304:
                assert await resp.read() == b""
                break
            assert resp.status == 200 and resp.headers["ETag"] != tag
            tag = resp.headers["ETag"]
    else:
        raise AssertionError("three visits in a row found the page changed: no 304")
    await tab.close()


async def test_the_servers_render_and_the_script_say_the_same(
    service: Service, browser: Browser
) -> None:
    """The first paint (the server's texts, eta_text in Python) and the script's own render
    of the same answer agree, in both languages: one table of texts, one way of writing a
    wait."""
    await service.put_wave(admit_rate=0.002)  # a wait of about an hour
    await service.control("resume")
    joined = await join_as(service, "same-1")
    for locale, lang in (("id-ID", "id"), ("en-US", "en")):
        page = await open_page(browser, service.page_url(), locale)
        await page.context.add_cookies(
            [{"name": "gelombang_ticket", "value": joined["ticket"], "url": service.page_url()}]
        )
        await page.page.evaluate(
            f"localStorage.setItem('gelombang.{WAVE}.ticket', {json.dumps(joined['ticket'])})"
        )
        response = await page.page.goto(service.page_url())
        assert response is not None
        html = await response.text()
        server_eta = re.search(r'<dd id="eta">([^<]*)</dd>', html)
        server_badge = re.search(r'data-state="waiting">([^<]*)</p>', html)
        assert server_eta and server_badge, html[:2000]
        await wait_for(page, WAITING)
        shown = await snapshot(page)
        assert shown["lang"] == lang
        assert shown["eta"] == server_eta.group(1), (lang, shown["eta"], server_eta.group(1))
        assert shown["badge"] == server_badge.group(1)
        await page.close()


async def test_a_wave_asking_for_proof_of_work_is_joined_by_the_page_itself(
    service: Service, browser: Browser
) -> None:
    await service.put_wave(pow_bits=12)
    page = await open_page(browser, service.page_url("?registrant=pow-1"), "id-ID")
    await wait_for(page, IN_LINE, timeout_s=30)
    joins = [e for e in page.exchanges if e.url.endswith("/join")]
    assert [e.status for e in joins] == [201]
    challenges = [e for e in page.exchanges if e.url.endswith("/challenge")]
    assert challenges and challenges[0].status == 200
    async with service.http.post(
        f"{service.base}/api/v1/waves/{WAVE}/join", json={"registrant": "pow-bot"}
    ) as resp:
        assert resp.status == 403  # a scripted join without the work gets no place
    assert_no_page_errors(page)


async def test_a_verified_join_comes_with_the_sites_enqueue_token_and_hides_it(
    service: Service, browser: Browser
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from queue_service.enqueue import mint_enqueue_token
    from queue_service.tokens import public_jwk

    site_key = Ed25519PrivateKey.generate()
    jwk = public_jwk(site_key.public_key())
    await service.put_wave(verified_joins=True, enqueue_keys=[jwk])
    bare = await open_page(browser, service.page_url(), "en-US")
    await wait_for(bare, in_state("verify"))
    assert "signed in at the registration site" in (await snapshot(bare))["message"]

    # after '#', as the README tells sites to: never in a server log or a Referer
    token = mint_enqueue_token(site_key, wave=WAVE, account="acct-1", kid=jwk["kid"])
    page = await open_page(browser, service.page_url(f"#enqueue_token={token}"), "en-US")
    await wait_for(page, IN_LINE)
    assert "enqueue_token" not in page.page.url  # kept out of the address bar and history
    assert_no_page_errors(page)
    # in the query it works too (a site that cannot do otherwise), once per token
    other = mint_enqueue_token(site_key, wave=WAVE, account="acct-2", kid=jwk["kid"])
    second = await open_page(browser, service.page_url(f"?enqueue_token={other}"), "en-US")
    await wait_for(second, IN_LINE)
    assert "enqueue_token" not in second.page.url
    assert_no_page_errors(second)


# -- the page under load, without JavaScript, and from a link -------------------------------

SCREENSHOTS = Path("/tmp/gelombang-screenshots")
"""Where the page tests leave what a phone showed, to be looked at (never committed)."""


async def screenshot(tab: Tab, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)  # noqa: ASYNC240  (once, a local folder)
    await tab.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


BUSY = "document.body.innerText.includes('Antrean sedang sangat ramai')"


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
async def test_under_load_the_page_stays_a_page_and_comes_back_by_itself(
    service: Service, browser: Browser, javascript: bool
) -> None:
    """A process shedding load answers the page with a small page in both languages that
    says the place is safe, then loads the waiting page again by itself (script or meta
    refresh): never a blank page of JSON in English."""
    joined = await join_as(service, f"busy-{javascript}")
    tab = await open_tab(browser, width=PHONE_WIDTH, height=PHONE_HEIGHT, locale="id-ID",
                         javascript=javascript)  # fmt: skip
    await tab.context.add_cookies(
        [{"name": "gelombang_ticket", "value": joined["ticket"], "url": service.page_url()}]
    )
    guard = service.app[OVERLOAD]
    max_lag_s, guard.max_lag_s = guard.max_lag_s, 0.0  # every page request is shed
    try:
        response = await tab.page.goto(service.page_url())
        assert response is not None and response.status == 503
        text = await tab.page.evaluate("document.body.innerText")
        assert "Antrean sedang sangat ramai" in text and "The queue is very busy" in text
        assert "tempat Anda tetap aman" in text and "it is safe" in text
        assert '"error"' not in text
        assert await tab.page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
        await screenshot(tab, f"shed-{'js' if javascript else 'nojs'}")
    finally:
        guard.max_lag_s = max_lag_s
    # Retry-After is 2 s; the script adds up to as long again at random
    await wait_until(tab.page, "!!document.getElementById('position')", timeout_s=10)
    assert await tab.page.text_content("#position") == str(OTHERS_AHEAD + 1)
    assert tab.console_errors == []
    await tab.close()


async def test_without_javascript_a_registrant_joins_with_the_button_and_keeps_the_place(
    service: Service, browser: Browser
) -> None:
    tab = await open_tab(browser, width=PHONE_WIDTH, height=PHONE_HEIGHT, locale="id-ID",
                         javascript=False)  # fmt: skip
    await tab.page.goto(service.page_url())
    assert await tab.page.text_content("#state") == "Belum dalam antrean"  # not "Memuat…"
    assert "tidak menghilangkan tempat" not in (await tab.page.text_content("#tip") or "")
    button = tab.page.get_by_role("button", name="Masuk antrean")
    box = await button.bounding_box()
    assert box is not None and box["height"] >= 48 and box["y"] < PHONE_HEIGHT  # in view
    await screenshot(tab, "nojs-join")

    await button.click()  # a plain form post, then back to the page
    await tab.page.wait_for_url(service.page_url())
    assert await tab.page.text_content("#state") == "Dijeda"
    assert await tab.page.text_content("#position") == str(OTHERS_AHEAD + 1)
    assert "tidak menghilangkan tempat Anda" in (await tab.page.text_content("#tip") or "")
    await screenshot(tab, "nojs-in-line")
    await tab.page.reload()  # the place is kept: the same ticket, no second join
    assert await tab.page.text_content("#position") == str(OTHERS_AHEAD + 1)
    assert (await service.counts())["waiting"] == OTHERS_AHEAD + 1

    await service.admit_everyone()  # admitted: a link on, and how long the session lasts
    await asyncio.sleep(0.5)
    await tab.page.reload()
    assert await tab.page.text_content("#state") == "Giliran Anda!"
    assert "Sesi pendaftaran Anda berlaku" in (await tab.page.text_content("#message") or "")
    await screenshot(tab, "nojs-admitted")
    await tab.page.get_by_role("link", name="Lanjutkan pendaftaran").click()
    await tab.page.wait_for_url(lambda url: url.startswith(service.origin.url))
    assert len(service.origin.tokens) == 1
    await tab.close()


async def test_a_ticket_in_the_link_is_the_place_shown_and_kept(
    service: Service, browser: Browser
) -> None:
    """`/w/{wave}?ticket=...` (a link carrying the place) shows that place, and the page's
    script keeps it: it used to join anew and show the holder a worse place."""
    joined = await join_as(service, "linked-1")
    page = await open_page(browser, service.page_url(f"?ticket={joined['ticket']}"), "en-US")
    await wait_for(page, IN_LINE)
    assert (await snapshot(page))["position"] == str(joined["position"])
    assert [e for e in page.exchanges if e.url.endswith("/join")] == []
    assert "ticket=" not in page.page.url  # kept out of the address bar and of history
    await page.page.reload()
    await wait_for(page, IN_LINE)
    assert (await snapshot(page))["position"] == str(joined["position"])
    assert [e for e in page.exchanges if e.url.endswith("/join")] == []
    assert_no_page_errors(page)


async def test_the_page_shows_who_runs_the_queue_and_what_to_have_ready(
    service: Service, browser: Browser
) -> None:
    await service.put_wave(
        operator_name="Manajemen Pelaksana Program Kartu Prakerja",
        official_url="https://www.prakerja.go.id/",
        have_ready=["NIK dan nomor KK", "Foto KTP (JPEG/PNG, < 2 MB)", "HP untuk kode OTP"],
    )
    page = await open_page(browser, service.page_url(), "id-ID")
    await wait_for(page, IN_LINE)
    text = await page.page.evaluate("document.body.innerText")
    assert "Manajemen Pelaksana Program Kartu Prakerja" in text
    assert "www.prakerja.go.id" in text and "Foto KTP" in text
    assert await page.page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
    await screenshot(page, "trust-id")
    await page.page.click("#lang")
    assert "Have ready now" in await page.page.evaluate("document.body.innerText")
    assert_no_page_errors(page)
