"""Call-backs on the waiting page, in real headless Chromium against the real service (its
admission loop and its senders running) and a real Redis: a registrant opts in, closes the
page, is told by SMS through a gateway that checks the signature, and comes back with the
link on another phone; and the same opt-in on a phone without JavaScript."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser

from queue_service.app import create_app
from queue_service.callback_setup import load_callback_keys
from queue_service.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_webhook
from queue_service.settings import Settings
from tests.helpers.pages import launch_chromium, open_tab, wait_until
from tests.helpers.support import NEVER_SHED

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ADMIN = {"Authorization": "Bearer test-admin-token"}
WAVE = "prakerja-73"
PHONE_WIDTH, PHONE_HEIGHT = 320, 640
CALLBACK_PAGE_BUDGET_BYTES = 40_000  # a plain page's 32 KB and the call-back box in both languages
CALLBACK_WIRE_BUDGET_BYTES = 14_000


@dataclass
class Stack:
    base: str
    http: aiohttp.ClientSession
    messages: list[dict[str, Any]] = field(default_factory=list)
    origin_hits: list[str] = field(default_factory=list)

    async def control(self, action: str) -> None:
        async with self.http.post(f"{self.base}/admin/v1/waves/{WAVE}/{action}", headers=ADMIN):
            pass


@pytest_asyncio.fixture(loop_scope="module")
async def stack(redis_url: str, state_dir: Path) -> AsyncIterator[Stack]:
    settings = Settings(
        redis_url=redis_url,
        admin_token="test-admin-token",
        state_dir=state_dir,
        **NEVER_SHED,
    )
    secret = load_callback_keys(settings)[1]
    received: list[dict[str, Any]] = []
    hits: list[str] = []

    async def gateway(request: web.Request) -> web.Response:
        raw = await request.read()
        ok = verify_webhook(
            secret,
            request.headers.get(TIMESTAMP_HEADER, ""),
            raw,
            request.headers.get(SIGNATURE_HEADER, ""),
            time.time(),
        )
        if not ok:
            return web.Response(status=401)
        received.append(orjson.loads(raw))
        return web.Response(status=202)

    async def register(request: web.Request) -> web.Response:
        hits.append(request.query.get("gelombang_token", ""))
        return web.Response(text="<!doctype html><h1>Pendaftaran</h1>", content_type="text/html")

    side = web.Application()
    side.router.add_post("/sms", gateway)
    side.router.add_get("/register", register)
    side_runner = web.AppRunner(side)
    await side_runner.setup()
    await web.TCPSite(side_runner, "127.0.0.1", 0).start()
    side_url = f"http://127.0.0.1:{side_runner.addresses[0][1]}"

    runner = web.AppRunner(create_app(settings), shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession() as http:
        now = time.time()
        wave = {
            "title": "Gelombang 73",
            "opens_at": now - 60,
            "closes_at": now + 3600,
            "admit_rate": 5,
            "abandon_after_s": 5,
            "origin_url": f"{side_url}/register",
            "notify": {
                "channels": ["sms", "whatsapp"],
                "webhook_url": f"{side_url}/sms",
                "lead_s": 60,
                "return_window_s": 300,
            },
        }
        async with http.put(f"{base}/admin/v1/waves/{WAVE}", json=wave, headers=ADMIN) as r:
            assert r.status == 201, await r.text()
        yield Stack(base, http, received, hits)
    await runner.cleanup()
    await side_runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as launched:
        yield launched


async def test_a_registrant_opts_in_closes_the_page_and_comes_back_with_the_link(
    stack: Stack, browser: Browser
) -> None:
    await stack.control("pause")  # everyone waits while the registrant is away
    # the call-back box, its texts and script come only with a wave that offers call-backs
    async with stack.http.get(f"{stack.base}/w/{WAVE}") as response:
        assert len(await response.read()) < CALLBACK_PAGE_BUDGET_BYTES
    async with (
        aiohttp.ClientSession(auto_decompress=False) as raw,
        raw.get(f"{stack.base}/w/{WAVE}", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert len(await response.read()) < CALLBACK_WIRE_BUDGET_BYTES
    tab = await open_tab(browser, width=PHONE_WIDTH, height=PHONE_HEIGHT, locale="id-ID")
    await tab.page.goto(f"{stack.base}/w/{WAVE}")
    await wait_until(tab.page, "document.getElementById('state').dataset.state === 'paused'")
    box = tab.page.locator("#callback")
    assert await box.is_visible()
    assert "Tidak perlu menunggu" in await box.text_content()
    await tab.page.check("#cb-form input[value=sms]")
    await tab.page.fill("#cb-address", "0812-3456-7890")
    await tab.page.click("#cb-form button")
    await wait_until(tab.page, "!document.getElementById('cb-done').hidden")
    done = await tab.page.text_content("#cb-done")
    assert "SMS" in done and "boleh menutup halaman ini" in done
    assert not await tab.page.locator("#cb-form").is_visible()
    assert tab.console_errors == []
    await tab.close()  # the phone kills the tab: nobody polls any more

    await asyncio.sleep(9)  # past the last poll deadline (a second's poll, 5 s of grace)
    await stack.control("resume")
    for _ in range(100):
        if stack.messages:
            break
        await asyncio.sleep(0.1)
    (message,) = stack.messages
    assert message["channel"] == "sms" and message["to"] == "+6281234567890"
    assert message["kind"] == "turn" and message["language"] == "id"
    assert message["return_url"] in message["text"]
    # GELOMBANG_PUBLIC_URL is unset here: the link names the default address; same path
    path = "/w/" + message["return_url"].split("/w/", 1)[1]
    assert path.startswith(f"/w/{WAVE}/return?code=")
    link = stack.base + path

    # another phone: the link shows a button (a chat app's preview spends nothing), and the
    # button brings the place back; the holder is admitted first and goes on to register
    other = await open_tab(browser, width=PHONE_WIDTH, height=PHONE_HEIGHT, locale="id-ID")
    await other.page.goto(link)
    await other.page.click("button[type=submit]")
    await wait_until(other.page, "location.pathname === '/register'", timeout_s=15)
    assert stack.origin_hits and stack.origin_hits[-1]
    await other.close()
    # the link worked once
    again = await open_tab(browser, width=PHONE_WIDTH, height=PHONE_HEIGHT, locale="en-US")
    await again.page.goto(link)
    await again.page.click("button[type=submit]")
    assert "used already" in await again.page.text_content("body")
    await again.close()


async def test_without_javascript_the_opt_in_form_works_and_says_the_page_may_be_closed(
    stack: Stack, browser: Browser
) -> None:
    await stack.control("pause")
    tab = await open_tab(
        browser, width=PHONE_WIDTH, height=PHONE_HEIGHT, locale="en-US", javascript=False
    )
    await tab.page.goto(f"{stack.base}/w/{WAVE}")
    await tab.page.click("noscript form button, form[action='/w/prakerja-73'] button")
    assert await tab.page.text_content("#state") == "Paused"
    await tab.page.check("#cb-form input[value=whatsapp]")
    await tab.page.fill("#cb-address", "12")  # not a number: said, and nothing kept
    await tab.page.click("#cb-form button")
    assert "Check the number" in await tab.page.text_content("#cb-error")
    await tab.page.check("#cb-form input[value=whatsapp]")
    await tab.page.fill("#cb-address", "+62 813 1111 2222")
    await tab.page.click("#cb-form button")
    done = tab.page.locator("#cb-done")
    assert await done.is_visible()
    assert "WhatsApp" in await done.text_content() and "may close this page" in (
        await done.text_content()
    )
    assert not await tab.page.locator("#cb-form").is_visible()
    await tab.close()
