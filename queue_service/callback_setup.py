"""Call-backs as the deployment sets them up: the contact key, the webhook secret, SMTP and the
VAPID key from settings (development keys under state_dir when none are configured, as the
signing keys are), the channels this deployment can send, and the senders' HTTP session."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from queue_service.callbacks import Callbacks
from queue_service.channels import (
    SEND_TIMEOUT_S,
    Channel,
    EmailChannel,
    SmtpSettings,
    WebhookChannel,
    WebPushChannel,
    load_vapid_key,
    vapid_public_key,
)
from queue_service.contacts import ContactCipher, ReturnCodes, load_or_create_key
from queue_service.outbox import OutboxSender
from queue_service.registry import WaveRegistry
from queue_service.settings import Settings
from queue_service.store import Store

log = logging.getLogger(__name__)


def public_url(settings: Settings) -> str:
    """Where return links point: the public URL, else this process's own address (fine for a
    rehearsal on one machine; a real wave sets GELOMBANG_PUBLIC_URL)."""
    return settings.public_url or f"http://{settings.host}:{settings.port}"


def available_channels(settings: Settings) -> frozenset[str]:
    kinds = {"sms", "whatsapp", "webpush"}
    if settings.smtp_url and settings.smtp_from:
        kinds.add("email")
    return frozenset(kinds)


def load_callback_keys(settings: Settings) -> tuple[bytes, bytes, bytes]:
    """(contact key, webhook secret, VAPID PEM), created once in development: `serve` calls
    this before its workers start, so they all read the same ones."""
    directory = settings.state_dir / "keys"
    contact = load_or_create_key(settings.contact_key, directory / "contact.key", "contact key")
    webhook = load_or_create_key(
        settings.webhook_secret, directory / "webhook.key", "webhook secret"
    )
    return contact, webhook, load_vapid_key(settings.vapid_key, directory)


def deployment_callbacks(settings: Settings, store: Store, secret: bytes) -> tuple[Callbacks, str]:
    contact_key, _, vapid_pem = load_callback_keys(settings)
    public_key = vapid_public_key(vapid_pem)
    callbacks = Callbacks(
        store,
        ContactCipher(contact_key),
        ReturnCodes(secret),
        available_channels(settings),
        public_key,
    )
    return callbacks, public_key


@dataclass
class CallbackChannels:
    settings: Settings
    callbacks: Callbacks
    channels: dict[str, Channel]

    def sender(self, store: Store, registry: WaveRegistry) -> OutboxSender:
        consumer = f"{os.getpid()}-{secrets.token_hex(4)}"
        return OutboxSender(
            store, registry, self.callbacks, self.channels, public_url(self.settings), consumer
        )


@contextlib.asynccontextmanager
async def callback_channels(
    settings: Settings, callbacks: Callbacks
) -> AsyncIterator[CallbackChannels]:
    """The channels, with one HTTP session for the webhook and Web Push senders."""
    _, webhook_secret, vapid_pem = load_callback_keys(settings)
    timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        webhook = WebhookChannel(session, webhook_secret)
        subject = settings.vapid_subject or settings.public_url or "mailto:noreply@localhost"
        channels: dict[str, Channel] = {
            "sms": webhook,
            "whatsapp": webhook,
            "webpush": WebPushChannel(session, vapid_pem, subject),
        }
        if settings.smtp_url and settings.smtp_from:
            channels["email"] = EmailChannel(
                SmtpSettings.from_url(settings.smtp_url, settings.smtp_from)
            )
        yield CallbackChannels(settings, callbacks, channels)
