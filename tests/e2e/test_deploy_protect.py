"""An origin protected with no line of its code, for real: deploy/nginx-protect.conf with Debian's
nginx and deploy/Caddyfile with Debian's caddy, each in front of a registration site that
knows nothing of Gelombang (tests/helpers/plain_origin.py) and of a `gelombang serve`, on
loopback. A browser without a token is sent to the waiting room; the token the waiting room
hands over opens the origin, with the registrant's subject; a token whose session ended, and a
one-time token from a second browser, are refused. Each config is rendered with only its
addresses (and nginx's paths) replaced."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gelombang_harness import ChildProcess, HttpReady
from queue_service.redis_server import free_port
from tests.e2e.test_deploy_nginx import nginx_binary
from tests.helpers.paths import REPO
from tests.helpers.processes import ServeProcess
from tests.helpers.support import ADMIN
from tests.helpers.tools import require_tool

pytestmark = pytest.mark.slow

WAVE = "prakerja-70"  # the wave id both configurations name
NGINX_CONF = REPO / "deploy" / "nginx-protect.conf"
CADDYFILE = REPO / "deploy" / "Caddyfile"
REVOCATION_WITHIN_S = 10.0  # nominally 0.5 s (verify.REVOCATION_MIRROR_S); slack for load


def replace_once(pattern: str, replacement: str, text: str, name: str) -> str:
    result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"{name}: {pattern!r} matched {count} times, not once"
    return result


def render_nginx(port: int, origin: int, queue: int, prefix: Path) -> str:
    conf = NGINX_CONF.read_text()
    name = "deploy/nginx-protect.conf"
    conf = replace_once(r"^(\s*server\s+)registration:9000;", rf"\g<1>127.0.0.1:{origin};",
                        conf, name)  # fmt: skip
    conf = replace_once(r"^(\s*server\s+)queue:8080;", rf"\g<1>127.0.0.1:{queue};", conf, name)
    conf = replace_once(r"^(\s*listen\s+)80;", rf"\g<1>127.0.0.1:{port};", conf, name)
    conf = replace_once(r"^pid\s+\S+;", f"pid {prefix / 'nginx.pid'};", conf, name)
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return replace_once(r"^http \{\n", "http {\n" + temp_paths, conf, name)


def render_caddy(port: int, origin: int, queue: int) -> str:
    conf = CADDYFILE.read_text()
    name = "deploy/Caddyfile"
    conf = replace_once(r"^:8081 \{", f"http://127.0.0.1:{port} {{", conf, name)
    conf = replace_once(r"reverse_proxy queue:8080$", f"reverse_proxy 127.0.0.1:{queue}", conf,
                        name)  # fmt: skip
    conf = replace_once(r"forward_auth queue:8080 \{", f"forward_auth 127.0.0.1:{queue} {{",
                        conf, name)  # fmt: skip
    return replace_once(r"reverse_proxy registration:9000$", f"reverse_proxy 127.0.0.1:{origin}",
                        conf, name)  # fmt: skip


@dataclass
class Stack:
    proxy: str
    url: str
    queue: ServeProcess


def proxy_process(kind: str, port: int, origin: int, queue: int, work: Path) -> ChildProcess:
    work.mkdir(parents=True, exist_ok=True)
    ready = HttpReady(f"http://127.0.0.1:{port}/.well-known/jwks.json")
    if kind == "nginx":
        conf = work / "nginx.conf"
        conf.write_text(render_nginx(port, origin, queue, work))
        command = [nginx_binary(), "-p", f"{work}/", "-c", str(conf), "-e", "stderr",
                   "-g", "daemon off;"]  # fmt: skip
        return ChildProcess("nginx", command, log=work / "nginx.log", ready=ready,
                            ready_timeout_s=10)  # fmt: skip
    caddy = require_tool("caddy", package="caddy")
    conf = work / "Caddyfile"
    conf.write_text(render_caddy(port, origin, queue))
    env = {**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work / "data"),
           "XDG_CONFIG_HOME": str(work / "config")}  # fmt: skip
    command = [caddy, "run", "--config", str(conf), "--adapter", "caddyfile"]
    return ChildProcess("caddy", command, log=work / "caddy.log", ready=ready, env=env,
                        ready_timeout_s=15)  # fmt: skip


@pytest.fixture
def protected(redis_url: str, tmp_path: Path) -> Iterator[Callable[[str], Stack]]:
    started: list[ChildProcess] = []

    def start(kind: str) -> Stack:
        queue = ServeProcess(redis_url, tmp_path)
        started.append(queue.start())
        origin_port = free_port()
        origin = ChildProcess(
            "plain-origin",
            [sys.executable, "-m", "tests.helpers.plain_origin", "--port", str(origin_port)],
            log=tmp_path / "origin.log",
            ready=HttpReady(f"http://127.0.0.1:{origin_port}/healthz"),
            cwd=REPO,
        )
        started.append(origin.start())
        port = free_port()
        proxy = proxy_process(kind, port, origin_port, queue.port, tmp_path / kind)
        started.append(proxy.start())
        return Stack(kind, f"http://127.0.0.1:{port}", queue)

    yield start
    for process in reversed(started):
        process.stop()


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A browser: its own cookies, pages asked for as a browser does, redirects not followed
    (the test looks at each)."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    headers = {"Accept": "text/html,application/xhtml+xml"}
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(cookie_jar=jar, headers=headers, timeout=timeout) as session:
        yield session


async def visit(session: aiohttp.ClientSession, url: str) -> tuple[int, str, Any]:
    """(status, Location, JSON body from the origin or None)."""
    async with session.get(url, allow_redirects=False) as response:
        body = await response.read()
        data = None
        if response.content_type == "application/json" and body:
            data = await response.json(content_type=None)
        return response.status, response.headers.get("Location", ""), data


async def open_site(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    """Follow the site's own redirects (a token moved from the URL into a cookie), at most 3,
    but not into the waiting room: (status, origin's answer) or (302, the waiting room)."""
    for _ in range(3):
        status, location, data = await visit(session, url)
        if status != 302 or "/w/" in location:
            return status, data if status == 200 else location
        url = str(aiohttp.client.URL(url).join(aiohttp.client.URL(location)))
    raise AssertionError("too many redirects")


async def admitted(stack: Stack, session: aiohttp.ClientSession) -> dict[str, Any]:
    """Join through the proxy as the waiting page does, and poll until admitted."""
    api = f"{stack.url}/api/v1/waves/{WAVE}"
    async with session.post(f"{api}/join", json={"registrant": "pendaftar-1"}) as response:
        assert response.status == 201, await response.text()
        ticket = (await response.json())["ticket"]
    deadline = time.monotonic() + 15
    while True:
        async with session.get(f"{api}/status", headers={"X-Queue-Ticket": ticket}) as response:
            view: dict[str, Any] = await response.json()
        if view["state"] == "admitted":
            return view
        assert time.monotonic() < deadline, view
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("kind", ["nginx", "caddy"])
async def test_an_unchanged_origin_behind_the_proxy_lets_in_only_admitted_browsers(
    protected: Callable[[str], Stack], kind: str
) -> None:
    if kind == "nginx" and shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin") is None:
        pytest.fail("nginx is not installed: run scripts/setup --test")
    stack = await asyncio.to_thread(protected, kind)
    async with browser() as first:
        origin_url = f"{stack.url}/daftar"
        body = {"opens_at": time.time() - 1, "closes_at": time.time() + 3600,
                "admit_rate": 50, "origin_url": origin_url, "one_time_tokens": True}  # fmt: skip
        async with first.put(f"{stack.queue.url}/admin/v1/waves/{WAVE}", json=body,
                             headers=ADMIN) as response:  # fmt: skip
            assert response.status == 201, await response.text()

        # no token: to the waiting room, which the same host serves
        status, location, _ = await visit(first, f"{stack.url}/daftar")
        assert status == 302 and location.endswith(f"/w/{WAVE}"), (status, location)
        page, _, _ = await visit(first, f"{stack.url}/w/{WAVE}")
        assert page == 200

        # admitted: the waiting room's redirect opens the site, and the cookie keeps it open
        view = await admitted(stack, first)
        assert view["redirect"].startswith(origin_url + "?gelombang_token=")
        status, answer = await open_site(first, view["redirect"])
        assert status == 200 and answer["origin"] == "plain", answer
        if kind == "caddy":  # the token left the address bar on the way in
            assert answer["path"] == "/daftar", answer
        subject = answer["subject"]
        assert subject and len(subject) > 20  # the registrant's keyed hash, not the id
        status, answer = await open_site(first, f"{stack.url}/daftar/ktp?step=2")
        assert status == 200 and answer["subject"] == subject
        # a header a browser sends cannot claim someone else's subject
        async with first.get(f"{stack.url}/daftar/otp",
                             headers={"X-Gelombang-Subject": "forged"}) as response:  # fmt: skip
            assert (await response.json())["subject"] == subject

        # one-time token: the shared link, or the cookie copied, from a second browser
        async with browser() as second:
            status, where = await open_site(second, view["redirect"])
            assert status == 302 and str(where).endswith(f"/w/{WAVE}"), (status, where)
            copied = {"Cookie": f"gelombang_admission={view['token']}"}
            async with second.get(f"{stack.url}/daftar", headers=copied,
                                  allow_redirects=False) as response:  # fmt: skip
                assert response.status == 302
                assert response.headers["Location"].endswith(f"/w/{WAVE}")

        # the session ends (registration done): the token is refused from then on
        bearer = {"Authorization": f"Bearer {view['token']}"}
        async with first.post(f"{stack.url}/api/v1/waves/{WAVE}/complete",
                              headers=bearer) as response:  # fmt: skip
            assert response.status == 204
        deadline = time.monotonic() + REVOCATION_WITHIN_S
        while True:
            status, where = await open_site(first, f"{stack.url}/daftar")
            if status == 302:
                break
            assert time.monotonic() < deadline, "a completed session's token still opens the site"
            await asyncio.sleep(0.1)
        assert str(where).endswith(f"/w/{WAVE}")
