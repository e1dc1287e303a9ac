"""The sample origin: real capacity behaviour, admission-token protection, and input checks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gelombang_origin import JwksVerifier
from queue_service.tokens import KeyRing, TokenIssuer, TokenVerifier
from simulator.client import Answer
from simulator.flow import STEPS, FlowContext, Step, StepOutcome, oversized_photo, photo_pool
from simulator.origin.app import create_app
from simulator.origin.config import OriginConfig
from simulator.origin.state import ORIGIN
from simulator.registrants import Population
from simulator.transport import send
from tests.helpers.processes import GelombangProcess
from tests.helpers.support import put_wave

WAVE = "gelombang-test"
ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


@dataclass(frozen=True)
class StepResult:
    answer: Answer
    outcome: StepOutcome


async def run_step(
    session: aiohttp.ClientSession, base: str, step: Step, ctx: FlowContext
) -> StepResult:
    """One step of the flow as the live driver sends it; what it taught is remembered."""
    answer = await send(session, base, step.build(ctx), timeout_s=30.0)
    outcome = step.judge(answer)
    if outcome is StepOutcome.OK:
        step.remember(ctx, dict(answer.body))
    return StepResult(answer, outcome)


@pytest.fixture
async def origin_client() -> Any:
    clients: list[TestClient[Any, Any]] = []

    async def make(app: web.Application) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def adult(index: int = 0) -> Any:
    population = Population(7, 200)
    return next(r for r in (population[i] for i in range(index, 200)) if r.age >= 18)


def account_body(i: int) -> dict[str, str]:
    return {"email": f"orang{i}@contoh.id", "phone": f"+62812{i:07d}", "name": f"Orang {i}"}


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split()[0] == name):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


async def test_overload_burst_climbs_latency_then_503s_and_never_exceeds_capacity(
    origin_client: ClientFactory,
) -> None:
    config = OriginConfig(
        capacity=4,
        backlog=12,
        queue_timeout_s=0.4,
        service_s={"account": 0.03},
        service_sigma=0.1,
        seed=1,
    )
    client = await origin_client(create_app(config))
    capacity = client.app[ORIGIN].capacity

    async def timed(i: int) -> tuple[int, float]:
        started = time.monotonic()
        response = await client.post("/api/v1/accounts", json=account_body(i))
        await response.read()
        return response.status, time.monotonic() - started

    idle = [await timed(i) for i in range(5)]
    assert all(status == 201 for status, _ in idle)
    # the median: one idle request slowed by the machine's other work must not set the bar
    idle_latency = sorted(latency for _, latency in idle)[len(idle) // 2]

    peak_seen = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak_seen
        while not stop.is_set():
            peak_seen = max(peak_seen, capacity.inflight)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(timed(100 + i) for i in range(120)))
    stop.set()
    await watcher

    statuses = [status for status, _ in results]
    ok_latencies = sorted(latency for status, latency in results if status == 201)
    assert statuses.count(503) > 0, "a full backlog must refuse at once with 503"
    assert statuses.count(201) >= config.capacity
    assert set(statuses) <= {201, 503, 504}
    # Served requests waited behind the backlog and were slowed by contention.
    assert ok_latencies[len(ok_latencies) // 2] > 3 * idle_latency
    assert peak_seen == capacity.peak_inflight == config.capacity
    metrics = await (await client.get("/metrics")).text()
    assert metric_value(metrics, 'gelombang_origin_rejected_total{reason="overload"}') == (
        statuses.count(503)
    )
    assert metric_value(metrics, "gelombang_origin_capacity") == 4
    assert metric_value(metrics, "gelombang_origin_inflight") == 0


async def test_requests_waiting_past_the_queue_timeout_get_504(
    origin_client: ClientFactory,
) -> None:
    config = OriginConfig(
        capacity=1, backlog=50, queue_timeout_s=0.1, service_s={"account": 0.08}, seed=2
    )
    client = await origin_client(create_app(config))
    responses = await asyncio.gather(
        *(client.post("/api/v1/accounts", json=account_body(i)) for i in range(10))
    )
    statuses = [r.status for r in responses]
    assert statuses.count(504) >= 5
    body = await next(r for r in responses if r.status == 504).json()
    assert body["error"]["code"] == "timeout"


def _issuer_and_verifier() -> tuple[TokenIssuer, TokenVerifier, KeyRing]:
    keyring = KeyRing.from_keys(Ed25519PrivateKey.generate())
    return TokenIssuer(keyring), TokenVerifier.from_keyring(keyring), keyring


def _token(issuer: TokenIssuer, *, wave: str = WAVE, age_s: float = 0, ttl_s: float = 600) -> str:
    now = time.time() - age_s
    return issuer.issue(
        wave=wave,
        subject="s",
        ticket=7,
        incarnation="i1",
        stamp="s7",
        admitted_at=now,
        expires_at=now + ttl_s,
    )


async def test_admission_tokens_valid_passes_forged_expired_wrong_wave_refused(
    origin_client: ClientFactory,
) -> None:
    issuer, _, keyring = _issuer_and_verifier()
    jwks_app = web.Application()

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(keyring.jwks())

    jwks_app.router.add_get("/.well-known/jwks.json", jwks)
    jwks_client = await origin_client(jwks_app)
    verifier = await JwksVerifier.fetch(str(jwks_client.make_url("/.well-known/jwks.json")))
    client = await origin_client(create_app(OriginConfig(wave=WAVE), verifier=verifier))
    forger = TokenIssuer(KeyRing.from_keys(Ed25519PrivateKey.generate()))
    valid = _token(issuer)
    tampered = valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB")
    refused = {
        "missing": None,
        "forged": _token(forger),
        "expired": _token(issuer, age_s=3600, ttl_s=60),
        "wrong_wave": _token(issuer, wave="another-wave"),
        "tampered": tampered,
        "garbage": "not-a-jwt",
    }
    for name, token in refused.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await client.post("/api/v1/accounts", json=account_body(1), headers=headers)
        assert response.status == 401, name
        body = await response.json()
        assert body["error"]["code"] in {"admission_required", "invalid_admission_token"}, name
    response = await client.post(
        "/api/v1/accounts", json=account_body(1), headers={"Authorization": f"Bearer {valid}"}
    )
    assert response.status == 201
    # The queue's redirect carries the token in the query once; a cookie holds it afterwards.
    response = await client.get("/", params={"gelombang_token": valid})
    assert response.status == 200
    assert (await client.get("/")).status == 200
    assert (await client.get("/healthz")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert metric_value(metrics, 'gelombang_origin_rejected_total{reason="invalid_token"}') == (
        len(refused)
    )


async def test_oversized_photo_refused_with_413_before_the_body_is_read(
    origin_client: ClientFactory,
) -> None:
    client = await origin_client(create_app(OriginConfig()))
    account = await (await client.post("/api/v1/accounts", json=account_body(1))).json()
    port = client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Announce 3 MB but send none of it: only a server that refuses from the headers answers.
    head = (
        f"POST /api/v1/accounts/{account['account_id']}/ktp HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {3 * 1024 * 1024}\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=3)
    writer.close()
    assert status_line.split()[1] == b"413"
    # Through the client flow, an over-limit photo is refused too, and the resized one passes.
    ctx = FlowContext(adult(), photo=oversized_photo())
    session = aiohttp.ClientSession()
    try:
        base = str(client.make_url("")).rstrip("/")
        for step in STEPS[:1]:
            assert (await run_step(session, base, step, ctx)).outcome is StepOutcome.OK
        too_big = await run_step(session, base, STEPS[1], ctx)
        assert too_big.outcome is StepOutcome.REFUSED
        assert too_big.answer.status in (413, None)
        ctx.resize_photo()
        assert (await run_step(session, base, STEPS[1], ctx)).outcome is StepOutcome.OK
    finally:
        await session.close()


async def test_bad_nik_underage_and_non_image_are_refused_with_json_4xx(
    origin_client: ClientFactory,
) -> None:
    client = await origin_client(create_app(OriginConfig()))
    person = adult()
    account = await (await client.post("/api/v1/accounts", json=account_body(2))).json()
    path = f"/api/v1/accounts/{account['account_id']}/ktp"

    async def ktp(nik: str, photo: bytes) -> tuple[int, str]:
        form = aiohttp.FormData()
        form.add_field("nik", nik)
        form.add_field("kk", person.kk)
        form.add_field("photo", photo, filename="ktp.png", content_type="image/png")
        response = await client.post(path, data=form)
        body = await response.json()
        return response.status, body["error"]["code"] if "error" in body else "ok"

    photo = photo_pool()[0]
    assert await ktp("12345", photo) == (400, "invalid_nik")
    assert await ktp("9901010101900001", photo) == (400, "invalid_nik")  # province 99
    underage = person.nik[:6] + "010120" + "0001"  # born 1 Jan 2020
    assert await ktp(underage, photo) == (422, "too_young")
    assert await ktp(person.nik, b"GIF89a" + photo[6:]) == (415, "photo_type")
    assert await ktp(person.nik, photo) == (200, "ok")
    bad_email = {**account_body(3), "email": "not-an-email"}
    response = await client.post("/api/v1/accounts", json=bad_email)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_email"
    response = await client.post("/api/v1/accounts", data=b"[1, 2]")
    assert response.status == 400
    for content_type, body in (
        ("multipart/form-data", b"no boundary"),
        ("multipart/form-data; boundary=zz", b"no parts at all"),
        ("multipart/form-data; boundary=zz", b'--zz\r\nContent-Disposition: form-data; name="nik"'),
        ("text/plain", b"not a form"),
    ):
        response = await client.post(path, data=body, headers={"Content-Type": content_type})
        assert response.status == 400, (content_type, body)
        assert (await response.json())["error"]["code"] in {"bad_form", "multipart_required"}


async def test_full_flow_completes_and_otp_resends_lock_out(
    origin_client: ClientFactory,
) -> None:
    client = await origin_client(create_app(OriginConfig(wave=WAVE)))
    base = str(client.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        ctx = FlowContext(adult(), photo=photo_pool()[1])
        for step in STEPS:
            result = await run_step(session, base, step, ctx)
            assert result.outcome is StepOutcome.OK, (step.name, result.answer)
        other = FlowContext(adult(5), photo=photo_pool()[2])
        await run_step(session, base, STEPS[0], other)
        sends = [await run_step(session, base, STEPS[2], other) for _ in range(7)]
    assert [s.answer.status for s in sends] == [202] * 6 + [429]
    assert sends[-1].answer.error_code == "otp_locked"
    assert sends[-1].answer.retry_after_s == 7200
    metrics = await (await client.get("/metrics")).text()
    assert metric_value(metrics, "gelombang_origin_registrations_completed_total") == 1
    # Joining before the checks passed is refused.
    response = await client.post(f"/api/v1/accounts/{other.account_id}/join")
    assert response.status == 409


async def test_wrong_otp_attempts_are_limited(origin_client: ClientFactory) -> None:
    client = await origin_client(create_app(OriginConfig()))
    account = await (await client.post("/api/v1/accounts", json=account_body(9))).json()
    path = f"/api/v1/accounts/{account['account_id']}/otp"
    sent = await (await client.post(f"{path}/send")).json()
    wrong = f"{(int(sent['simulated_sms_code']) + 1) % 1_000_000:06d}"
    statuses = [
        (await client.post(f"{path}/verify", json={"code": wrong})).status for _ in range(6)
    ]
    assert statuses == [400] * 5 + [429]
    response = await client.post(f"{path}/verify", json={"code": sent["simulated_sms_code"]})
    assert response.status == 429  # still locked for this code; a new code is needed


async def _send_part_and_hang_up(
    port: int, path: str, content_type: str, body: bytes, *, wait_s: float, reset: bool
) -> None:
    """Announce twice the body it sends, send the first half, wait, hang up: a registrant
    who closed the tab mid-upload (FIN) or whose phone dropped off the network (RST)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {2 * len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await asyncio.sleep(wait_s)
    if reset:  # linger 0: close sends RST instead of FIN
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


@pytest.mark.slow  # starts a process
async def test_a_client_disconnecting_mid_request_is_one_info_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    log = tmp_path / "origin.log"
    # The real `gelombang origin` process: aiohttp's test server cancels handlers on
    # disconnect, `web.run_app` (what the demo runs) does not.
    with GelombangProcess(
        ["origin", "--unprotected", "--seed", "1"], log, ready_path="/healthz"
    ) as origin:
        async with aiohttp.ClientSession() as session:
            created = await session.post(origin.url + "/api/v1/accounts", json=account_body(1))
            account = (await created.json())["account_id"]
            boundary = "gelombang-test"
            ktp_form = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; '
                    'filename="ktp.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
                ).encode()
                + b"\xff\xd8\xff"
                + b"\0" * 4096
            )
            requests = [
                ("/api/v1/accounts", "application/json", b'{"email": "orang@contoh.id", '),
                (f"/api/v1/accounts/{account}/ktp", f"multipart/form-data; boundary={boundary}",
                 ktp_form),
            ]  # fmt: skip
            # Gone before the handler reads, and while it reads; by FIN and by RST.
            for wait_s, reset in ((0.0, False), (0.0, True), (0.2, False), (0.2, True)):
                for path, content_type, body in requests:
                    await _send_part_and_hang_up(
                        origin.port, path, content_type, body, wait_s=wait_s, reset=reset
                    )
            for _ in range(100):  # up to 5 s for the origin to notice the last one
                if origin.log_text().count("client disconnected") == 8:
                    break
                await asyncio.sleep(0.05)
            metrics = await (await session.get(origin.url + "/metrics")).text()
    lines = origin.log_text().splitlines()
    disconnects = [line for line in lines if "client disconnected" in line]
    assert len(disconnects) == 8, lines
    for line, (path, _, _) in zip(disconnects, requests * 4, strict=True):
        assert line.endswith(
            f" INFO simulator.origin.errors client disconnected before the answer: POST {path}"
        ), line
    assert [line for line in lines if line not in disconnects and "INFO" not in line] == []
    assert "Traceback" not in origin.log_text()
    # Counted as the client's doing (4xx, nginx's 499), never as an origin error (5xx).
    for step in ("account", "ktp"):
        for status_class, expected in (("4xx", 4), ("5xx", 0)):
            series = f'{{status_class="{status_class}",step="{step}"}}'
            assert metric_value(metrics, "gelombang_origin_requests_total" + series) == expected


async def test_a_json_body_arriving_in_pieces_is_read_whole(origin_client: ClientFactory) -> None:
    client = await origin_client(create_app(OriginConfig(seed=4)))
    assert client.port is not None
    body = orjson.dumps(account_body(2))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /api/v1/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10]
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # a slow phone: the rest comes in a later packet
    writer.write(body[10:])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=3)
    writer.close()
    assert status_line.split()[1] == b"201"


async def test_signing_in_hands_out_an_enqueue_token_the_queue_accepts(
    client: object, clock: Any, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """A verified join end to end: the person signs in at the origin, gets an enqueue token
    for the wave, and joins the queue with it; a bare id gets nowhere."""
    from simulator.origin.sign_in import EnqueueSigner

    queue = cast(TestClient, client)
    clock.set(time.time())  # the origin signs on the real clock
    signer = EnqueueSigner(Ed25519PrivateKey.generate(), WAVE, str(queue.make_url("")))
    origin = await aiohttp_client(create_app(OriginConfig(wave=WAVE), signer=signer))
    jwks_url = str(origin.make_url("/.well-known/enqueue-jwks.json"))
    now = time.time()
    await put_wave(queue, WAVE, opens_at=now - 10, closes_at=now + 600, verified_joins=True,
                   enqueue_jwks_url=jwks_url)  # fmt: skip

    signed_in = await origin.post(
        "/api/v1/sign-in", json={"email": "ani@example.com", "phone": "+6281234567890"}
    )
    assert signed_in.status == 200
    body = await signed_in.json()
    assert body["queue_url"].startswith(f"{queue.make_url(f'/w/{WAVE}')}#enqueue_token=")
    assert "ani@example.com" not in body["enqueue_token"]  # the account is opaque
    joined = await queue.post(
        f"/api/v1/waves/{WAVE}/join", json={"enqueue_token": body["enqueue_token"]}
    )
    assert joined.status == 201, await joined.text()
    bare = await queue.post(f"/api/v1/waves/{WAVE}/join", json={"registrant": "3171011508900001"})
    assert bare.status == 401
    assert (await bare.json())["error"]["code"] == "enqueue_token_required"
    bad = await origin.post("/api/v1/sign-in", json={"email": "nope", "phone": "+62"})
    assert bad.status == 400


async def test_the_origin_loses_capacity_on_schedule_and_by_an_admin_call(
    origin_client: ClientFactory,
) -> None:
    """An origin that loses half its capacity mid-run (what the autopilot must follow):
    from the schedule, and live; in-flight never exceeds the capacity of the moment."""
    config = OriginConfig(
        capacity=6, backlog=100, queue_timeout_s=5, service_s={"account": 0.05},
        service_sigma=0.0, seed=1, capacity_schedule=((0.3, 3),), admin_token="o" * 20,
    )  # fmt: skip
    client = await origin_client(create_app(config))
    capacity = client.app[ORIGIN].capacity
    first = await asyncio.gather(
        *(client.post("/api/v1/accounts", json=account_body(i)) for i in range(12))
    )
    assert {r.status for r in first} == {201} and capacity.peak_inflight == 6
    await asyncio.sleep(0.35)
    assert capacity.capacity == 3
    capacity.peak_inflight = 0
    second = await asyncio.gather(
        *(client.post("/api/v1/accounts", json=account_body(100 + i)) for i in range(12))
    )
    assert {r.status for r in second} == {201} and capacity.peak_inflight == 3
    metrics = await (await client.get("/metrics")).text()
    assert metric_value(metrics, "gelombang_origin_capacity") == 3
    admin = {"Authorization": f"Bearer {'o' * 20}"}
    wrong = await client.put("/api/v1/admin/capacity", json={"capacity": 9})
    assert wrong.status == 401
    bad = await client.put("/api/v1/admin/capacity", json={"capacity": 0}, headers=admin)
    assert bad.status == 400
    done = await client.put("/api/v1/admin/capacity", json={"capacity": 9}, headers=admin)
    assert done.status == 200 and capacity.capacity == 9
    metrics = await (await client.get("/metrics")).text()
    assert metric_value(metrics, "gelombang_origin_capacity") == 9
    assert 'step="admin"' not in metrics  # an admin call is not origin traffic


async def test_without_an_admin_token_the_capacity_cannot_be_changed(
    origin_client: ClientFactory,
) -> None:
    client = await origin_client(create_app(OriginConfig(capacity=2)))
    response = await client.put("/api/v1/admin/capacity", json={"capacity": 9})
    assert response.status == 403 and client.app[ORIGIN].capacity.capacity == 2
