"""How a call-back message reaches a person: a signed webhook (any SMS or WhatsApp gateway sits
behind it), e-mail over SMTP, Web Push (VAPID, RFC 8291 encryption). Each sender takes one
`Message` and raises `DeliveryFailed` for anything that should be tried again later; nothing
here logs a contact, a text or a link (they name a person and a working way back into line).

Every message carries its idempotency key (`<wave>:<ticket stamp>:<kind>`): the webhook's
`Idempotency-Key` header and JSON field, the e-mail's Message-ID, the push's Topic. The outbox
delivers at least once; a receiver that keeps the keys it has seen makes it never twice in
effect (docs/callbacks.md shows a gateway doing so).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import smtplib
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import http_ece
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from queue_service.contacts import Contact

SIGNATURE_HEADER = "X-Gelombang-Signature"
TIMESTAMP_HEADER = "X-Gelombang-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SEND_TIMEOUT_S = 10.0
PUSH_TTL_S = 3600
VAPID_LIFETIME_S = 12 * 3600


class DeliveryFailed(Exception):
    """A try that failed in a way worth trying again (a timeout, a 5xx, a refused connection).
    `permanent`: it never will succeed (the push subscription is gone, the address refused)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Message:
    wave: str
    kind: str
    """near, turn or carried."""
    language: str
    contact: Contact
    subject: str
    text: str
    return_url: str
    until_ms: int
    """Until when (wall ms) the holder may come back; 0 when no window applies."""
    idempotency_key: str
    webhook_url: str = ""
    """The wave's gateway, for SMS and WhatsApp."""


class Channel(Protocol):
    async def send(self, message: Message) -> None: ...


def sign_webhook(secret: bytes, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over `<timestamp>.<body>`, as the X-Gelombang-Signature header carries it."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_webhook(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float, tolerance_s: int = 300
) -> bool:
    """What a gateway does with a delivery (docs/callbacks.md has it in a few lines): the
    signature over the raw body, and a timestamp within `tolerance_s` (a replay is refused)."""
    try:
        fresh = abs(now - int(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign_webhook(secret, timestamp, body), signature)


class WebhookChannel:
    """SMS and WhatsApp: a POST of JSON to the wave's webhook_url, signed."""

    def __init__(self, session: aiohttp.ClientSession, secret: bytes) -> None:
        self._session = session
        self._secret = secret

    async def send(self, message: Message) -> None:
        url = message.webhook_url
        if not url:
            raise DeliveryFailed("the wave has no webhook_url", permanent=True)
        body = orjson.dumps(
            {
                "id": message.idempotency_key,
                "wave": message.wave,
                "kind": message.kind,
                "channel": message.contact.kind,
                "to": message.contact.address,
                "language": message.language,
                "text": message.text,
                "return_url": message.return_url,
                "until": _iso(message.until_ms),
            }
        )
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_webhook(self._secret, timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            IDEMPOTENCY_HEADER: message.idempotency_key,
        }
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                if response.status >= 500 or response.status in (408, 429):
                    raise DeliveryFailed(f"webhook answered {response.status}")
                if response.status >= 400:
                    raise DeliveryFailed(f"webhook refused: {response.status}", permanent=True)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(f"webhook unreachable ({type(exc).__name__})") from None


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str
    password: str
    tls: bool
    """TLS from the first byte (smtps://)."""
    starttls: str
    """'auto' (when the server offers it), 'require', or 'off'."""
    sender: str

    @classmethod
    def from_url(cls, url: str, sender: str) -> SmtpSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("smtp_url must be smtp://host:port or smtps://host:port")
        starttls = parse_qs(parts.query).get("starttls", ["auto"])[0]
        if starttls not in ("auto", "require", "off"):
            raise ValueError("smtp_url's starttls must be auto, require or off")
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 587),
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            tls=tls,
            starttls="off" if tls else starttls,
            sender=sender,
        )


class EmailChannel:
    """E-mail over SMTP with the standard library, in a thread (one connection per message: a
    wave sends a few messages per second at most, and a dropped connection costs one try)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, message: Message) -> None:
        email = EmailMessage()
        email["From"] = self._settings.sender
        email["To"] = message.contact.address
        email["Subject"] = message.subject
        email["Date"] = format_datetime(datetime.now(UTC))
        domain = self._settings.sender.rpartition("@")[2] or "gelombang.invalid"
        # the idempotency key, hashed into a stable Message-ID: a second try is the same mail
        digest = hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:32]
        email["Message-ID"] = f"<{digest}@{domain}>"
        email["Auto-Submitted"] = "auto-generated"
        email.set_content(message.text)
        try:
            await asyncio.to_thread(self._deliver, email)
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryFailed("the address was refused", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"SMTP failed ({type(exc).__name__})") from None

    def _deliver(self, email: EmailMessage) -> None:
        s = self._settings
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if s.tls:
            client = smtplib.SMTP_SSL(s.host, s.port, timeout=SEND_TIMEOUT_S, context=context)
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=SEND_TIMEOUT_S)
        with client:
            client.ehlo()
            if s.starttls == "require" or (s.starttls == "auto" and client.has_extn("starttls")):
                client.starttls(context=context)
                client.ehlo()
            if s.username:
                client.login(s.username, s.password)
            client.send_message(email)


def load_vapid_key(path: os.PathLike[str] | str | None, directory: os.PathLike[str]) -> bytes:
    """The VAPID private key as PEM: the configured file, else a development key kept in
    `directory` (created once)."""
    from pathlib import Path

    if path:
        pem = Path(path).read_bytes()
    else:
        target = Path(directory) / "vapid.pem"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            target.touch(mode=0o600, exist_ok=True)
            target.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        pem = target.read_bytes()
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise ValueError("the VAPID key must be a P-256 (prime256v1) private key")
    return pem


def vapid_public_key(pem: bytes) -> str:
    """The applicationServerKey the page subscribes with: the public point, url-safe base64."""
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class WebPushChannel:
    """Web Push: the payload encrypted for the subscription (RFC 8291, aes128gcm: http-ece),
    the request signed for the push service (RFC 8292 VAPID: py-vapid), sent with aiohttp."""

    def __init__(self, session: aiohttp.ClientSession, pem: bytes, subject: str) -> None:
        self._session = session
        self._vapid = Vapid02.from_pem(pem)
        self._subject = subject

    async def send(self, message: Message) -> None:
        subscription = orjson.loads(message.contact.address)
        endpoint = subscription["endpoint"]
        payload = orjson.dumps(
            {"title": message.subject, "body": message.text, "url": message.return_url}
        )
        receiver = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), _b64decode(subscription["keys"]["p256dh"])
        )
        body = http_ece.encrypt(
            payload,
            salt=os.urandom(16),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=receiver.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            ),
            auth_secret=_b64decode(subscription["keys"]["auth"]),
            version="aes128gcm",
        )
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "sub": self._subject,
            "exp": int(time.time()) + VAPID_LIFETIME_S,
        }
        headers = dict(self._vapid.sign(claims))
        headers.update(
            {
                "TTL": str(PUSH_TTL_S),
                "Content-Encoding": "aes128gcm",
                "Content-Type": "application/octet-stream",
                "Urgency": "high",
                # a message sent again replaces the first in the push service (32 url-safe chars)
                "Topic": base64.urlsafe_b64encode(
                    hashlib.sha256(message.idempotency_key.encode()).digest()[:24]
                ).decode(),
            }
        )
        try:
            async with self._session.post(endpoint, data=body, headers=headers) as response:
                if response.status in (404, 410):
                    raise DeliveryFailed("the push subscription is gone", permanent=True)
                if response.status >= 500 or response.status in (408, 429):
                    raise DeliveryFailed(f"push service answered {response.status}")
                if response.status >= 400:
                    raise DeliveryFailed(f"push refused: {response.status}", permanent=True)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(f"push service unreachable ({type(exc).__name__})") from None


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(ms: int) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None
