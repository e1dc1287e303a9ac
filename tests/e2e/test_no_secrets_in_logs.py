"""No secret or personal id in any log line: the admin token, the service secret, the Redis
password, tickets, admission tokens, raw registrant ids, call-back contacts (phone numbers,
e-mails) and return links never reach the log, whatever errors a run goes through (malformed
requests, forged tickets and tokens, refused contacts, a gateway that refuses every message,
Redis down)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from queue_service.redis_server import EmbeddedRedis
from tests.helpers.processes import ServeProcess
from tests.helpers.support import ORIGIN

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "admin-token-9f8e7d6c5b4a39281706"
SECRET = "service-secret-0a1b2c3d4e5f60718293"
REDIS_PASSWORD = "redis-password-5c4b3a29181716151413"
NIKS = [f"31710115089{i:05d}" for i in range(1, 6)]
ADMITTED_WITHIN_S = 10.0
"""The admission loop admits within a tick; a loaded machine has taken over a second."""
PHONES = ["0812 7777 1234", "+62 813 8888 5678"]
PHONE_DIGITS = ["81277771234", "81388885678"]
RETURN_CODE = "Zx9-returncode-Qw7_abcd"


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return answer


async def test_a_run_through_every_error_path_logs_no_secret_and_no_id(tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "redis", password=REDIS_PASSWORD).start()
    env = {
        "GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN,
        "GELOMBANG_SECRET": SECRET,
        "GELOMBANG_REDIS_TIMEOUT_S": "0.3",
        "GELOMBANG_LOG_LEVEL": "DEBUG",
    }
    seen: list[str] = []
    try:
        serve = ServeProcess(redis.url, tmp_path / "state", env=env)
        (tmp_path / "state").mkdir()
        with serve:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with aiohttp.ClientSession(serve.url) as http:
                now = time.time()
                wave = {"opens_at": now - 5, "closes_at": now + 600, "admit_rate": 100,
                        "origin_url": ORIGIN, "id_kind": "nik"}  # fmt: skip
                async with http.put("/admin/v1/waves/w", json=wave, headers=admin) as r:
                    assert r.status == 201
                tickets = []
                for nik in NIKS:
                    async with http.post("/api/v1/waves/w/join", json={"registrant": nik}) as r:
                        tickets.append((await r.json())["ticket"])
                tokens: list[str] = []
                deadline = time.monotonic() + ADMITTED_WITHIN_S
                while not tokens and time.monotonic() < deadline:
                    await asyncio.sleep(1.0)  # admitted by the loop (later on a loaded machine)
                    for ticket in tickets:
                        async with http.get(f"/api/v1/waves/w/status?ticket={ticket}") as r:
                            body = await r.json()
                            if "token" in body:
                                tokens.append(body["token"])
                assert tokens, "nobody was admitted"
                seen += tickets + tokens
                # every kind of refusal, each carrying something secret or personal
                for ticket in tickets:
                    tampered = ticket[:-2] + "xx"
                    async with http.get(f"/api/v1/waves/w/status?ticket={tampered}") as r:
                        assert r.status == 401
                    async with http.get(f"/api/v1/waves/nope/status?ticket={ticket}") as r:
                        assert r.status == 404
                for token in tokens:
                    bearer = {"Authorization": f"Bearer {token[:-3]}abc"}
                    async with http.post("/api/v1/waves/w/complete", headers=bearer) as r:
                        assert r.status == 401
                    bearer = {"Authorization": f"Bearer {token}"}
                    async with http.post("/api/v1/waves/other/complete", headers=bearer) as r:
                        assert r.status in (401, 404)
                async with http.post(
                    "/api/v1/waves/w/join", json={"registrant": NIKS[0] + "9"}
                ) as r:
                    assert r.status == 400  # not a NIK
                async with http.post("/api/v1/waves/w/join", json={"registrant": NIKS[1]}) as r:
                    assert r.status == 409  # held elsewhere
                async with http.get(
                    "/admin/v1/waves", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"}
                ) as r:
                    assert r.status == 401
                for bad in (
                    f"GET /api/v1/waves/w/status?ticket={tickets[0]} HTTP/1.1\r\nX-Bad\r\n\r\n",
                    f"GET /x HTTP/1.1\r\nX-Queue-Ticket: {tickets[1]}\r\nX-A: \x7f\r\n\r\n",
                    "POST /api/v1/waves/w/join HTTP/1.1\r\nContent-Length: 5\r\n"
                    f'Transfer-Encoding: chunked\r\n\r\nzz\r\n{{"registrant": "{NIKS[2]}"}}\r\n',
                    f"GARBAGE {NIKS[3]} {ADMIN_TOKEN}\r\n\r\n",
                ):
                    await raw(serve.port, bad.encode())
                # call-backs: contacts given, refused, and messages a gateway refuses for good
                # (the service's own /healthz answers a POST 405: every message is given up)
                notify = {"channels": ["sms", "whatsapp"], "lead_s": 600,
                          "webhook_url": f"{serve.url}/healthz"}  # fmt: skip
                callback_wave = {**wave, "id_kind": "generic", "notify": notify,
                                 "abandon_after_s": 30, "max_active": 1}  # fmt: skip
                async with http.put("/admin/v1/waves/cb", json=callback_wave, headers=admin) as r:
                    assert r.status == 201, await r.text()
                # the one slot goes to somebody else: the holders who opt in wait, and are told
                async with http.post("/api/v1/waves/cb/join", json={"registrant": "cb-0"}) as r:
                    assert r.status == 201
                await asyncio.sleep(0.5)
                body = {"registrant": "cb-1", "contact": {"kind": "sms", "address": PHONES[0]}}
                async with http.post("/api/v1/waves/cb/join", json=body) as r:
                    assert r.status == 201 and "callback" in await r.json()
                async with http.post("/api/v1/waves/cb/join", json={"registrant": "cb-2"}) as r:
                    cb_ticket = (await r.json())["ticket"]
                bad = {"contact": {"kind": "whatsapp", "address": PHONES[1] + "x"}}
                async with http.post(
                    "/api/v1/waves/cb/notify", json=bad, headers={"X-Queue-Ticket": cb_ticket}
                ) as r:
                    assert r.status == 400
                good = {"contact": {"kind": "whatsapp", "address": PHONES[1]}}
                async with http.post(
                    "/api/v1/waves/cb/notify", json=good, headers={"X-Queue-Ticket": cb_ticket}
                ) as r:
                    assert r.status == 201
                async with http.get(f"/w/cb/return?code={RETURN_CODE}") as r:
                    assert r.status == 200
                async with http.post("/w/cb/return", data={"code": RETURN_CODE}) as r:
                    assert r.status == 409
                await asyncio.sleep(3.0)  # told (lead 600 s): sent, refused, given up
                redis.kill()  # Redis down: every path that needs it fails and logs
                for ticket in tickets:
                    async with http.get(f"/api/v1/waves/w/status?ticket={ticket}") as r:
                        assert r.status in (200, 503)
                async with http.post("/api/v1/waves/w/join", json={"registrant": NIKS[4]}) as r:
                    assert r.status == 503
                async with http.get("/admin/v1/waves/w", headers=admin) as r:
                    assert r.status == 503
                await asyncio.sleep(1.5)  # the admission loop notices
                redis.start()
                await asyncio.sleep(1.0)
            log = serve.log_text()
    finally:
        redis.stop()

    assert "redis" in log.lower() and "failed" in log  # the errors were logged...
    assert "malformed request" in log
    assert "given up after" in log  # the senders ran, failed and said so
    secrets = {"admin token": ADMIN_TOKEN, "secret": SECRET, "redis password": REDIS_PASSWORD}
    for name, value in secrets.items():
        assert value not in log, f"the {name} is in the log"
    for nik in NIKS:
        assert nik not in log, "a registrant id is in the log"
    for digits in PHONE_DIGITS:
        assert digits not in log, "a phone number is in the log"
    assert RETURN_CODE not in log, "a return code is in the log"
    for value in seen:
        assert value not in log and value.split(".")[-1] not in log, "a ticket or token is logged"
