"""Real headless Chromium for the page tests, driven by Playwright: Debian's /usr/bin/chromium
(no browser download), one throw-away context per tab, and a record of what each tab did:
console errors, HTTP exchanges with the browser's own timings, and native dialogs.

    async with launch_chromium() as browser:
        tab = await open_tab(browser, width=320, height=640, locale="id-ID")
        await tab.page.goto(url)
        ...
        assert tab.console_errors == []
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    Request,
    Response,
    async_playwright,
)

from loadtests.chromium import CHROMIUM_FLAGS
from tests.helpers.tools import require_tool

TIMEOUT_MS = 15_000
# Chromium logs a failed or refused request like this; it is an HTTP answer, not a page error.
NETWORK_ERROR_PREFIX = "Failed to load resource:"


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """Chromium with a fresh profile; closed (with its helper processes) on leaving."""
    executable = require_tool("chromium", package="chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Exchange:
    """One HTTP request a tab made, and its answer once it came."""

    request: Request
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers, names lower-cased."""

    @property
    def url(self) -> str:
        return self.request.url

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def sent_at(self) -> float:
        """When the browser sent it, in seconds (comparable with `answered_at` only)."""
        return self.request.timing["startTime"] / 1000

    @property
    def answered_at(self) -> float | None:
        """When the response headers arrived, on the same clock as `sent_at`."""
        timing = self.request.timing
        if self.status is None or timing["responseStart"] < 0:
            return None
        return (timing["startTime"] + timing["responseStart"]) / 1000


@dataclass
class Tab:
    """A page in its own browser context (its own cookies and storage), and what it did."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    """console.error/console.assert calls and uncaught exceptions: the page misbehaved."""
    network_errors: list[str] = field(default_factory=list)
    """Chromium's "Failed to load resource: ... status of 401" lines: answers, not bugs."""
    exchanges: list[Exchange] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    """Native alert/confirm messages (each accepted, as a person would)."""

    @property
    def context(self) -> BrowserContext:
        return self.page.context

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type not in ("error", "assert"):
            return
        if message.text.startswith(NETWORK_ERROR_PREFIX):
            self.network_errors.append(message.text)
        else:
            self.console_errors.append(message.text)

    def _on_page_error(self, error: Exception) -> None:
        self.console_errors.append(f"uncaught: {error}")

    def _on_request(self, request: Request) -> None:
        self.exchanges.append(Exchange(request))

    def _on_response(self, response: Response) -> None:
        for exchange in reversed(self.exchanges):
            if exchange.request is response.request:
                exchange.status = response.status
                exchange.headers = dict(response.headers)  # already lower-cased
                return

    async def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.accept()

    async def close(self) -> None:
        await self.context.close()


async def open_tab(
    browser: Browser,
    *,
    width: int = 412,
    height: int = 915,
    mobile: bool = True,
    locale: str | None = None,
    javascript: bool = True,
) -> Tab:
    """A fresh tab with a phone-sized viewport by default. `locale` (e.g. "id-ID") sets
    navigator.language, Accept-Language and Intl formatting; `javascript=False` is a phone
    with scripts off."""
    context = await browser.new_context(
        viewport={"width": width, "height": height},
        is_mobile=mobile,
        locale=locale,
        java_script_enabled=javascript,
    )
    context.set_default_timeout(TIMEOUT_MS)
    tab = Tab(await context.new_page())
    tab.page.on("console", tab._on_console)
    tab.page.on("pageerror", tab._on_page_error)
    tab.page.on("request", tab._on_request)
    tab.page.on("response", tab._on_response)
    tab.page.on("dialog", tab._on_dialog)
    return tab


async def wait_until(page: Page, expression: str, *, timeout_s: float = 10.0) -> object:
    """Poll the JS `expression` every 50 ms until it is truthy; return its value.

    Not `page.wait_for_function`: that evaluates the expression with `eval` inside the page,
    which the waiting page's Content-Security-Policy (no 'unsafe-eval') rightly refuses;
    `page.evaluate` goes through DevTools, outside the page's policy. An evaluation that fails
    while the page navigates is retried."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = await page.evaluate(expression)
            if value:
                return value
            problem = f"last value {value!r}"
        except Error as exc:  # e.g. the execution context was destroyed by a navigation
            problem = exc.message
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout_s} s for {expression!r} on {page.url}: {problem}")
        await asyncio.sleep(0.05)
