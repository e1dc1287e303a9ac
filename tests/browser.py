"""A small headless-Chromium harness for tests, speaking the DevTools protocol (CDP) over one
aiohttp websocket. No playwright/selenium: Debian's real `/usr/bin/chromium` and aiohttp only.

Usage::

    from browser import Browser   # pytest puts tests/ on sys.path (no __init__.py there)

    async with Browser.launch() as browser:          # starts chromium, kills it on exit
        page = await browser.new_page(width=320, height=640, locale="id-ID")
        await page.goto("http://127.0.0.1:8080/w/demo")   # waits for the load event
        await page.wait_for("document.querySelector('#position').textContent !== '—'")
        text = await page.evaluate("document.querySelector('#position').textContent")
        await page.click("#lang-toggle")
        await page.reload()
        png = await page.screenshot()                 # PNG bytes
        await page.set_offline(True)                  # a phone losing signal
        assert not page.console_errors                # console.error, uncaught exceptions

- `evaluate(expression)` runs JS in the page (promises are awaited) and returns the value as
  Python data (JSON round trip); a thrown exception raises `JavaScriptError`.
- `wait_for(expression, timeout_s=...)` polls until the expression is truthy and returns its
  value; evaluation errors during a navigation are retried, a timeout raises `TimeoutError`
  saying which condition never held.
- `page.url` follows the main frame, including navigations the page starts by itself (for
  example `location.href = ...`), so `wait_for_url(predicate)` can catch a redirect.
- `console_errors`: `console.error(...)` calls, uncaught exceptions and browser log entries of
  level error, except network ones (a 4xx the page expects is not a page error); those are in
  `network_errors`.
- `exchanges`: every HTTP request the page made (method, URL, status, response headers,
  browser-monotonic send/answer times), e.g. to check that a client honoured Retry-After.
- `set_offline(True)` cuts the page's network like a phone losing signal.
- Native dialogs (`alert`, `confirm`) are accepted automatically and recorded in `dialogs`.

If Chromium is missing, `Browser.launch()` raises `ChromiumNotFound` with the install
command: tests that need a browser fail loudly rather than skip (CI installs it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

CHROMIUM = os.environ.get("GELOMBANG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)
STARTUP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 30.0


class ChromiumNotFound(RuntimeError):
    pass


class BrowserError(RuntimeError):
    """A DevTools command failed."""


class JavaScriptError(RuntimeError):
    """The evaluated expression threw."""


@dataclass
class ConsoleEntry:
    source: str
    """`console`, `exception`, or the browser log source (`network`, `javascript`, ...)."""
    level: str
    text: str
    url: str = ""


@dataclass
class Exchange:
    """One HTTP request the page made, and its response once it arrived. Times are the
    browser's monotonic seconds, comparable with each other only."""

    request_id: str
    method: str
    url: str
    sent_at: float
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers, names lower-cased."""
    answered_at: float | None = None
    failed: str | None = None
    """The network error text (e.g. net::ERR_INTERNET_DISCONNECTED), if it failed."""


@dataclass
class _Session:
    """Routes events for one attached target (page) by its CDP session id."""

    session_id: str
    listeners: dict[str, list[Callable[[dict[str, Any]], None]]] = field(default_factory=dict)

    def on(self, method: str, callback: Callable[[dict[str, Any]], None]) -> None:
        self.listeners.setdefault(method, []).append(callback)

    def off(self, method: str, callback: Callable[[dict[str, Any]], None]) -> None:
        with contextlib.suppress(ValueError):
            self.listeners.get(method, []).remove(callback)

    def dispatch(self, method: str, params: dict[str, Any]) -> None:
        for callback in list(self.listeners.get(method, ())):
            try:
                callback(params)
            except Exception:  # one odd event must not stop the reader for every page
                log.exception("handling %s", method)


class Browser:
    """One headless Chromium process and one DevTools websocket to it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        profile_dir: Path,
        http: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
    ) -> None:
        self._process = process
        self._profile_dir = profile_dir
        self._http = http
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._sessions: dict[str, _Session] = {}
        self._reader = asyncio.create_task(self._read_loop())
        self.pages: list[Page] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, *extra_flags: str) -> AsyncIterator[Browser]:
        """Start Chromium with a throw-away profile; always kills it (and its helper
        processes) and removes the profile on exit, even if the test failed."""
        profile_dir = Path(tempfile.mkdtemp(prefix="gelombang-chromium-"))
        process = await asyncio.to_thread(_start_chromium, profile_dir, extra_flags)
        http: aiohttp.ClientSession | None = None
        browser: Browser | None = None
        try:
            ws_url = await _devtools_url(process, profile_dir)
            http = aiohttp.ClientSession()
            ws = await http.ws_connect(ws_url, max_msg_size=0, autoping=True)
            browser = cls(process, profile_dir, http, ws)
            yield browser
        finally:
            if browser is not None:
                await browser._shutdown()
            if http is not None:
                await http.close()
            await asyncio.to_thread(_kill, process)
            shutil.rmtree(profile_dir, ignore_errors=True)

    async def new_page(
        self,
        *,
        width: int = 412,
        height: int = 915,
        mobile: bool = True,
        locale: str | None = None,
    ) -> Page:
        """A fresh tab with a phone-sized viewport. `locale` (e.g. "id-ID") sets
        `navigator.language`, Accept-Language and Intl formatting for this page."""
        created = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": created["targetId"], "flatten": True}
        )
        session = _Session(attached["sessionId"])
        self._sessions[session.session_id] = session
        page = Page(self, session, created["targetId"])
        await page._setup(width=width, height=height, mobile=mobile, locale=locale)
        self.pages.append(page)
        return page

    async def close_pages(self) -> None:
        """Close every open tab, e.g. between tests sharing one browser."""
        for page in list(self.pages):
            await page.close()

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        """Send one CDP command and return its result (raises BrowserError on failure)."""
        if self._reader.done():
            raise BrowserError(f"browser connection is closed (sending {method})")
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        try:
            await self._ws.send_json(message)
            reply = await asyncio.wait_for(future, COMMAND_TIMEOUT_S)
        finally:
            self._pending.pop(message_id, None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message', reply['error'])}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def _read_loop(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = msg.json()
                if "id" in data:
                    future = self._pending.get(data["id"])
                    if future is not None and not future.done():
                        future.set_result(data)
                elif "method" in data:
                    session = self._sessions.get(data.get("sessionId", ""))
                    if session is not None:
                        session.dispatch(data["method"], data.get("params", {}))
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BrowserError("browser connection closed"))

    async def _shutdown(self) -> None:
        # Ask politely first (flushes nothing we need, but lets Chromium exit cleanly);
        # the process group is killed afterwards regardless.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), 3.0)
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


class Page:
    """One tab. Create with `Browser.new_page()`."""

    def __init__(self, browser: Browser, session: _Session, target_id: str) -> None:
        self._browser = browser
        self._session = session
        self.target_id = target_id
        self.url = "about:blank"
        self.console: list[ConsoleEntry] = []
        self.dialogs: list[str] = []
        self.exchanges: list[Exchange] = []
        self._by_request_id: dict[str, Exchange] = {}
        self._main_frame_id: str | None = None
        self._tasks: set[asyncio.Task[dict[str, Any]]] = set()

    @property
    def console_errors(self) -> list[ConsoleEntry]:
        """Errors that mean the page itself misbehaved (not the HTTP statuses it expects)."""
        return [e for e in self.console if e.level == "error" and e.source != "network"]

    @property
    def network_errors(self) -> list[ConsoleEntry]:
        """Browser log lines such as "Failed to load resource: ... status of 401"."""
        return [e for e in self.console if e.level == "error" and e.source == "network"]

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._browser.send(method, params, session_id=self._session.session_id)

    async def _setup(self, *, width: int, height: int, mobile: bool, locale: str | None) -> None:
        self._session.on("Runtime.consoleAPICalled", self._on_console)
        self._session.on("Runtime.exceptionThrown", self._on_exception)
        self._session.on("Log.entryAdded", self._on_log)
        self._session.on("Page.frameNavigated", self._on_frame_navigated)
        self._session.on("Page.javascriptDialogOpening", self._on_dialog)
        self._session.on("Network.requestWillBeSent", self._on_request)
        self._session.on("Network.responseReceived", self._on_response)
        self._session.on("Network.loadingFailed", self._on_failed)
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.send(f"{domain}.enable")
        tree = await self.send("Page.getFrameTree")
        self._main_frame_id = tree["frameTree"]["frame"]["id"]
        await self.set_viewport(width, height, mobile=mobile)
        if locale is not None:
            await self.send("Emulation.setLocaleOverride", {"locale": locale})
            user_agent = (await self.send("Browser.getVersion"))["userAgent"]
            await self.send(
                "Emulation.setUserAgentOverride",
                {"userAgent": user_agent, "acceptLanguage": locale},
            )

    async def set_viewport(self, width: int, height: int, *, mobile: bool = True) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    async def goto(self, url: str, *, timeout_s: float = 15.0) -> None:
        """Navigate and wait for the load event."""
        async with self._expect("Page.loadEventFired", timeout_s):
            result = await self.send("Page.navigate", {"url": url})
            if result.get("errorText"):
                raise BrowserError(f"navigating to {url}: {result['errorText']}")

    async def reload(self, *, timeout_s: float = 15.0) -> None:
        async with self._expect("Page.loadEventFired", timeout_s):
            await self.send("Page.reload", {"ignoreCache": False})

    async def evaluate(self, expression: str) -> Any:
        """Evaluate JS in the page and return its (JSON-serialisable) value."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise JavaScriptError(f"{expression!r} threw: {description}")
        return result.get("result", {}).get("value")

    async def wait_for(
        self, expression: str, *, timeout_s: float = 10.0, every: float = 0.05
    ) -> Any:
        """Poll `expression` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout_s
        last_problem = "it stayed falsy"
        while True:
            try:
                value = await self.evaluate(expression)
                if value:
                    return value
                last_problem = f"last value {value!r}"
            except (JavaScriptError, BrowserError) as exc:
                last_problem = str(exc)  # e.g. the context was destroyed by a navigation
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"waited {timeout_s}s for {expression!r} on {self.url}: {last_problem}"
                )
            await asyncio.sleep(every)

    async def wait_for_url(
        self, predicate: Callable[[str], bool], *, timeout_s: float = 10.0
    ) -> str:
        """Wait until the main frame's URL satisfies `predicate` (navigations included)."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.url):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"waited {timeout_s}s for the URL; it is still {self.url}")
            await asyncio.sleep(0.05)
        return self.url

    async def click(self, selector: str) -> None:
        """Click the element via a real mouse event at its centre (so a covered or
        off-screen element fails like it would for a person)."""
        box = await self.evaluate(
            f"""(() => {{
                const el = document.querySelector({_js_string(selector)});
                if (!el) return null;
                el.scrollIntoView({{block: 'center'}});
                const r = el.getBoundingClientRect();
                return {{x: r.left + r.width / 2, y: r.top + r.height / 2,
                         w: r.width, h: r.height}};
            }})()"""
        )
        if not box or box["w"] == 0 or box["h"] == 0:
            raise BrowserError(f"no visible element matches {selector!r}")
        for event in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": event, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    async def screenshot(self, *, full_page: bool = False) -> bytes:
        """PNG bytes of the viewport (or the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        result = await self.send("Page.captureScreenshot", params)
        return base64.b64decode(result["data"])

    async def cookies(self, url: str | None = None) -> list[dict[str, Any]]:
        """Cookies the browser would send to `url` (default: the page's URL), HttpOnly ones
        included."""
        result = await self.send("Network.getCookies", {"urls": [url or self.url]})
        cookies: list[dict[str, Any]] = result.get("cookies", [])
        return cookies

    async def clear_cookies(self) -> None:
        """Forget every cookie in the browser (all tabs), as a phone's cleaner app might."""
        await self.send("Network.clearBrowserCookies")

    async def set_offline(self, offline: bool) -> None:
        """Cut (or restore) this page's network, as a phone losing signal would; the page
        sees failed fetches and `offline`/`online` events."""
        await self.send(
            "Network.emulateNetworkConditions",
            {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )

    async def close(self) -> None:
        """Close the tab (its timers and polling stop with it)."""
        if self in self._browser.pages:
            self._browser.pages.remove(self)
            await self._browser.send("Target.closeTarget", {"targetId": self.target_id})
            self._browser._sessions.pop(self._session.session_id, None)

    @contextlib.asynccontextmanager
    async def _expect(self, method: str, timeout_s: float) -> AsyncIterator[None]:
        """Listen for `method` before the body runs (so a fast event is not missed), and
        wait for it after."""
        fired = asyncio.Event()

        def listener(_params: dict[str, Any]) -> None:
            fired.set()

        self._session.on(method, listener)
        try:
            yield
            try:
                await asyncio.wait_for(fired.wait(), timeout_s)
            except TimeoutError:
                raise TimeoutError(f"no {method} within {timeout_s}s on {self.url}") from None
        finally:
            self._session.off(method, listener)

    def _on_console(self, params: dict[str, Any]) -> None:
        text = " ".join(
            str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])
        )
        level = "error" if params.get("type") in {"error", "assert"} else str(params.get("type"))
        self.console.append(ConsoleEntry("console", level, text))

    def _on_exception(self, params: dict[str, Any]) -> None:
        details = params.get("exceptionDetails", {})
        text = details.get("exception", {}).get("description") or details.get("text", "")
        self.console.append(ConsoleEntry("exception", "error", text, details.get("url", "")))

    def _on_log(self, params: dict[str, Any]) -> None:
        entry = params.get("entry", {})
        self.console.append(
            ConsoleEntry(
                str(entry.get("source", "")),
                str(entry.get("level", "")),
                str(entry.get("text", "")),
                str(entry.get("url", "")),
            )
        )

    def _on_request(self, params: dict[str, Any]) -> None:
        request = params.get("request", {})
        exchange = Exchange(
            str(params.get("requestId", "")),
            str(request.get("method", "")),
            str(request.get("url", "")),
            float(params.get("timestamp", 0.0)),
        )
        self._by_request_id[exchange.request_id] = exchange
        self.exchanges.append(exchange)

    def _on_response(self, params: dict[str, Any]) -> None:
        exchange = self._by_request_id.get(str(params.get("requestId", "")))
        if exchange is not None:
            response = params.get("response", {})
            exchange.status = int(response.get("status", 0))
            exchange.headers = {
                str(k).lower(): str(v) for k, v in response.get("headers", {}).items()
            }
            exchange.answered_at = float(params.get("timestamp", 0.0))

    def _on_failed(self, params: dict[str, Any]) -> None:
        exchange = self._by_request_id.get(str(params.get("requestId", "")))
        if exchange is not None:
            exchange.failed = str(params.get("errorText", "failed"))
            exchange.answered_at = float(params.get("timestamp", 0.0))

    def _on_frame_navigated(self, params: dict[str, Any]) -> None:
        frame = params.get("frame", {})
        if frame.get("parentId") is None:
            self._main_frame_id = frame.get("id", self._main_frame_id)
            self.url = str(frame.get("url", self.url))

    def _on_dialog(self, params: dict[str, Any]) -> None:
        self.dialogs.append(str(params.get("message", "")))
        task = asyncio.get_running_loop().create_task(
            self.send("Page.handleJavaScriptDialog", {"accept": True})
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _start_chromium(profile_dir: Path, extra_flags: tuple[str, ...]) -> subprocess.Popen[bytes]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        shutil.rmtree(profile_dir, ignore_errors=True)
        raise ChromiumNotFound(
            f"{CHROMIUM} not found: install Chromium (apt-get install -y chromium) or set "
            "GELOMBANG_CHROMIUM to its path; the browser tests need a real browser."
        )
    with (profile_dir / "chromium.log").open("wb") as log:
        return subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", *extra_flags],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so every helper process dies with it
        )


async def _devtools_url(process: subprocess.Popen[bytes], profile_dir: Path) -> str:
    """Chromium writes "<port>\\n<browser ws path>" to DevToolsActivePort once listening."""
    port_file = profile_dir / "DevToolsActivePort"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (profile_dir / "chromium.log").read_text(errors="replace")[-2000:]
            raise BrowserError(f"chromium exited with {process.returncode} at start:\n{log}")
        with contextlib.suppress(FileNotFoundError):
            lines = port_file.read_text().split()
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.05)
    raise BrowserError(f"chromium did not open its DevTools port within {STARTUP_TIMEOUT_S}s")


def _kill(process: subprocess.Popen[bytes]) -> None:
    """End Chromium's whole process group: TERM, a short grace period, then KILL."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    # Helpers (renderer, zygote) may outlive the main process for a moment.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _js_string(value: str) -> str:
    return json.dumps(value)
