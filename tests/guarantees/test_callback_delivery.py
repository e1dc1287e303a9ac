"""Guarantee 14's delivery, over the real protocols on loopback: a webhook receiver that checks
the signature, an SMTP server (aiosmtpd), a push endpoint that decrypts the payload with the
subscription's private key (RFC 8291). At least once, never twice in effect: a failed try is
retried with the same idempotency key; a message given up goes to the dead letters; a message
for a ticket that ended is dropped."""

from __future__ import annotations

import asyncio
import base64
import email
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import http_ece
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from queue_service.app import create_app
from queue_service.callback_setup import callback_channels, load_callback_keys
from queue_service.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_webhook
from queue_service.clock import ManualClock
from queue_service.http.appkeys import CALLBACKS, SERVICE, STORE
from queue_service.keys import WaveKeys
from queue_service.outbox import OutboxSender
from queue_service.redis_server import free_port
from queue_service.settings import Settings
from queue_service.tokens import KeyRing
from tests.helpers.support import ADMIN, admit, join_ok, put_wave

WAVE = "w"


class Gateway:
    """An SMS gateway's receiving end: checks the signature and the timestamp, keeps each
    idempotency key once (what makes a resent message never twice in effect)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.fail_next = 0
        self.refuse = False
        self.received: list[dict[str, Any]] = []
        self.seen_keys: set[str] = set()
        self.deliveries = 0
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.deliveries += 1
        if not verify_webhook(
            self.secret,
            request.headers.get(TIMESTAMP_HEADER, ""),
            raw,
            request.headers.get(SIGNATURE_HEADER, ""),
            time.time(),
        ):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.refuse:
            return web.Response(status=400)
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503)
        body = orjson.loads(raw)
        assert request.headers["Idempotency-Key"] == body["id"]
        if body["id"] not in self.seen_keys:
            self.seen_keys.add(body["id"])
            self.received.append(body)
        return web.Response(status=202)


class PushService:
    """A push service endpoint: checks the VAPID header's shape and keeps the body."""

    def __init__(self) -> None:
        self.bodies: list[tuple[bytes, dict[str, str]]] = []
        self.gone = False

    async def handle(self, request: web.Request) -> web.Response:
        if self.gone:
            return web.Response(status=410)
        self.bodies.append((await request.read(), dict(request.headers)))
        return web.Response(status=201)


class Mailbox(MessageHandler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[email.message.Message] = []

    def handle_message(self, message: email.message.Message) -> None:
        self.messages.append(message)


@pytest.fixture
def mailbox() -> Any:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


@pytest.fixture
async def endpoints(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[tuple[Gateway, PushService, str]]:
    gateway, push = Gateway(b""), PushService()
    app = web.Application()
    app.router.add_post("/gateway", gateway.handle)
    app.router.add_post("/push/{id}", push.handle)
    server = await aiohttp_server(app)
    yield gateway, push, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def queue(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    clock: ManualClock,
    keyring: KeyRing,
    mailbox: Any,
) -> tuple[TestClient, Settings]:
    _, port = mailbox
    settings = make_settings(
        smtp_url=f"smtp://127.0.0.1:{port}?starttls=off",
        smtp_from="antrean@example.go.id",
        public_url="https://antrean.example.go.id",
    )
    app = create_app(settings, clock=clock, keyring=keyring, run_admission=False)
    return await aiohttp_client(app), settings


def subscription() -> tuple[ec.EllipticCurvePrivateKey, bytes, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return key, auth, {"p256dh": b64(public), "auth": b64(auth)}


async def called_holders(
    client: TestClient, clock: ManualClock, contacts: list[dict[str, Any]]
) -> list[str]:
    """Holders who opted in with `contacts`, left, and were reached by the line (each then has
    one 'turn' message in the outbox)."""
    tickets = []
    for i, contact in enumerate(contacts):
        ticket = (await join_ok(client, WAVE, f"r{i}"))["ticket"]
        response = await client.post(
            f"/api/v1/waves/{WAVE}/notify",
            json={"contact": contact, "language": "en" if i % 2 else "id"},
            headers={"X-Queue-Ticket": ticket},
        )
        assert response.status == 201, await response.text()
        tickets.append(ticket)
    await client.post(f"/admin/v1/waves/{WAVE}/pause", headers=ADMIN)
    for _ in range(30):
        clock.advance(0.5)
        await admit(client, WAVE)
    await client.post(f"/admin/v1/waves/{WAVE}/resume", headers=ADMIN)
    clock.advance(0.5)
    assert (await admit(client, WAVE)).callbacks.called == len(contacts)
    return tickets


async def deliver(sender: OutboxSender, rounds: int = 20) -> None:
    for _ in range(rounds):
        await sender.round()


async def test_every_channel_delivers_for_real_signed_encrypted_and_in_the_holders_language(
    queue: tuple[TestClient, Settings],
    clock: ManualClock,
    endpoints: tuple[Gateway, PushService, str],
    mailbox: Any,
    redis_client: aioredis.Redis,
) -> None:
    client, settings = queue
    gateway, push, base = endpoints
    gateway.secret = load_callback_keys(settings)[1]
    box, _ = mailbox
    notify = {
        "channels": ["sms", "whatsapp", "email", "webpush"],
        "webhook_url": f"{base}/gateway",
        "lead_s": 60,
        "return_window_s": 600,
    }
    await put_wave(client, WAVE, abandon_after_s=5, notify=notify, title="Prakerja 71")
    await admit(client, WAVE)
    key, auth, keys = subscription()
    contacts = [
        {"kind": "sms", "address": "0812 3456 7890"},
        {"kind": "email", "address": "Budi@Example.CO.ID"},
        {"kind": "webpush", "address": {"endpoint": f"{base}/push/abc", "keys": keys}},
        {"kind": "whatsapp", "address": "+62 813 1111 2222"},
    ]
    tickets = await called_holders(client, clock, contacts)
    async with callback_channels(settings, client.app[CALLBACKS]) as channels:
        sender = channels.sender(client.app[STORE], client.app[SERVICE].registry)
        await deliver(sender)

    # SMS and WhatsApp through the signed webhook, in the holder's language
    assert gateway.bad_signatures == 0
    by_channel = {m["channel"]: m for m in gateway.received}
    sms, whatsapp = by_channel["sms"], by_channel["whatsapp"]
    assert sms["to"] == "+6281234567890" and sms["language"] == "id"
    assert whatsapp["to"] == "+6281311112222" and whatsapp["language"] == "en"
    assert "sekarang giliran Anda" in sms["text"] and "your turn now" in whatsapp["text"]
    assert sms["return_url"].startswith(f"https://antrean.example.go.id/w/{WAVE}/return?code=")
    assert sms["return_url"] in sms["text"] and sms["kind"] == "turn"
    assert sms["id"] == f"{WAVE}:{tickets[0].split('.')[2]}:turn"
    # e-mail over SMTP, with a Message-ID from the idempotency key
    (mail,) = box.messages
    assert mail["To"] == "Budi@example.co.id" and "Prakerja 71" in mail["Subject"]
    assert "/return?code=" in mail.get_payload() and mail["Message-ID"]
    # Web Push: the push endpoint can decrypt it with the subscription's private key only
    (body, headers) = push.bodies[0]
    assert headers["Content-Encoding"] == "aes128gcm" and headers["Authorization"].startswith(
        "vapid t="
    )
    plain = orjson.loads(
        http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm")
    )
    assert plain["url"].startswith("https://antrean.example.go.id/w/") and plain["title"]
    # the outbox is empty: each delivered once
    assert await redis_client.xlen(WaveKeys(WAVE).outbox) == 0
    # the return link in the SMS brings its holder back, once
    code = sms["return_url"].rsplit("=", 1)[1]
    back = await client.post(f"/api/v1/waves/{WAVE}/return", json={"code": code})
    assert back.status == 200 and (await back.json())["result"] == "back"


async def test_a_failing_gateway_gets_the_message_again_with_the_same_key_and_no_second_effect(
    queue: tuple[TestClient, Settings],
    clock: ManualClock,
    endpoints: tuple[Gateway, PushService, str],
    redis_client: aioredis.Redis,
) -> None:
    client, settings = queue
    gateway, _, base = endpoints
    gateway.secret = load_callback_keys(settings)[1]
    gateway.fail_next = 2
    notify = {"channels": ["sms"], "webhook_url": f"{base}/gateway", "return_window_s": 600}
    await put_wave(client, WAVE, abandon_after_s=5, notify=notify)
    await admit(client, WAVE)
    await called_holders(client, clock, [{"kind": "sms", "address": "081234567890"}])
    async with callback_channels(settings, client.app[CALLBACKS]) as channels:
        sender = OutboxSender(
            client.app[STORE],
            client.app[SERVICE].registry,
            client.app[CALLBACKS],
            channels.channels,
            "https://q.example",
            "test",
            retry_idle_ms=1,
            backoff_base_ms=1,
        )
        for _ in range(30):
            await sender.round()
            await asyncio.sleep(0.01)
        assert gateway.deliveries == 3 and len(gateway.received) == 1
        # a redelivery of a message already received (a sender that died before its
        # acknowledgement) is recognised by its key: still one in effect
        await redis_client.xadd(
            WaveKeys(WAVE).outbox,
            {"seq": "1", "stamp": gateway.received[0]["id"].split(":")[1], "kind": "turn",
             "until": "0"},
        )  # fmt: skip
        for _ in range(5):
            await sender.round()
        assert gateway.deliveries == 4 and len(gateway.received) == 1
        # a gateway that refuses for good: given up at once, in the dead letters, no contact
        gateway.refuse = True
        await redis_client.xadd(
            WaveKeys(WAVE).outbox,
            {"seq": "1", "stamp": gateway.received[0]["id"].split(":")[1], "kind": "near",
             "until": "0"},
        )  # fmt: skip
        for _ in range(5):
            await sender.round()
    dead = await redis_client.xrange(WaveKeys(WAVE).outbox_dead)
    assert len(dead) == 1 and dead[0][1][b"reason"].startswith(b"webhook refused")
    assert b"0812" not in repr(dead).encode() and b"+62" not in repr(dead).encode()
    assert await redis_client.xlen(WaveKeys(WAVE).outbox) == 0


async def test_a_message_for_a_ticket_that_ended_is_dropped_not_sent(
    queue: tuple[TestClient, Settings],
    clock: ManualClock,
    endpoints: tuple[Gateway, PushService, str],
    redis_client: aioredis.Redis,
) -> None:
    client, settings = queue
    gateway, _, base = endpoints
    gateway.secret = load_callback_keys(settings)[1]
    notify = {"channels": ["sms"], "webhook_url": f"{base}/gateway", "return_window_s": 600}
    await put_wave(client, WAVE, abandon_after_s=5, notify=notify)
    await admit(client, WAVE)
    (ticket,) = await called_holders(client, clock, [{"kind": "sms", "address": "081234567890"}])
    left = await client.post(f"/api/v1/waves/{WAVE}/leave", headers={"X-Queue-Ticket": ticket})
    assert left.status == 204
    async with callback_channels(settings, client.app[CALLBACKS]) as channels:
        await deliver(channels.sender(client.app[STORE], client.app[SERVICE].registry), 3)
    assert gateway.deliveries == 0
    assert await redis_client.xlen(WaveKeys(WAVE).outbox) == 0


async def test_a_wave_asking_for_a_channel_the_deployment_cannot_send_is_refused(
    client: TestClient,
) -> None:
    response = await client.put(
        f"/admin/v1/waves/{WAVE}",
        json={
            "opens_at": 1,
            "closes_at": 4_000_000_000,
            "admit_rate": 1,
            "origin_url": "http://127.0.0.1:9/",
            "notify": {"channels": ["email"]},
        },
        headers=ADMIN,
    )
    body = await response.json()
    assert response.status == 400 and "GELOMBANG_SMTP_URL" in body["error"]["message"]
    response = await client.put(
        f"/admin/v1/waves/{WAVE}",
        json={
            "opens_at": 1,
            "closes_at": 4_000_000_000,
            "admit_rate": 1,
            "origin_url": "http://127.0.0.1:9/",
            "notify": {"channels": ["sms"]},
        },
        headers=ADMIN,
    )
    assert response.status == 400 and "webhook_url" in (await response.json())["error"]["message"]
