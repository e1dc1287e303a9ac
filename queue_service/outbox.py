"""The outbox's senders: every process reads each call-back wave's outbox (a Redis stream,
lua/outbox.lua) through one consumer group, sends, and acknowledges. A message is deleted only
once delivered, so a process that dies holding one leaves it pending: another claims it when it
has been idle `RETRY_IDLE_MS` (XAUTOCLAIM). A failed try is retried with exponential back-off
(5 s, 10 s, 20 s, ... at most 5 minutes) up to `MAX_TRIES`, then moved to the dead letters.

What a message says is built at sending time: the contact is read from the ticket's record (a
message for a ticket that ended meanwhile is dropped: nobody is called for a place that is
gone), decrypted, and the text comes from the waiting page's table of texts, in the holder's
language. Nothing that names the person reaches a log line or a metric label.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from queue_service import metrics
from queue_service.callbacks import Callbacks
from queue_service.channels import Channel, DeliveryFailed, Message
from queue_service.contacts import Contact
from queue_service.errors import ApiError, UnknownWave
from queue_service.registry import WaveRegistry, WaveRuntime
from queue_service.store import Store
from queue_service.texts import eta_text, local_time, messages

log = logging.getLogger(__name__)

READ_BATCH = 50
IDLE_SLEEP_S = 0.5
RETRY_IDLE_MS = 30_000
"""A pending message idle this long is claimed again (its sender failed it or died): longer
than a try can take (channels.SEND_TIMEOUT_S, an SMTP exchange), so no two processes send one
message at once; a failed try waits its back-off on top (outbox_due)."""
BACKOFF_BASE_MS = 5_000
BACKOFF_CAP_MS = 300_000
MAX_TRIES = 8
"""About 20 minutes of tries: after that the message is a dead letter (an alert fires)."""
CONCURRENT_SENDS = 32


def return_url(public_url: str, wave: str, code: str) -> str:
    return f"{public_url.rstrip('/')}/w/{wave}/return?code={code}"


def compose(
    runtime: WaveRuntime, kind: str, language: str, until_ms: int, url: str, now: float
) -> tuple[str, str]:
    """(subject, text) of a message, from static/messages.json (cb_* keys)."""
    t = messages()[language if language in ("id", "en") else "id"]
    config = runtime.config
    title = config.title or config.id
    values = {
        "title": title,
        "link": url,
        "t": local_time(until_ms / 1000, language) if until_ms else "",
        "w": eta_text(max(0.0, until_ms / 1000 - now), language) if until_ms else "",
        "lead": eta_text(config.notify.lead_s, language),
        "next": config.notify.carry_over_to,
    }
    text, subject = t[f"cbm_{kind}"], t[f"cbm_subject_{kind}"]
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
        subject = subject.replace("{" + name + "}", value)
    return subject, text


class OutboxSender:
    def __init__(
        self,
        store: Store,
        registry: WaveRegistry,
        callbacks: Callbacks,
        channels: Mapping[str, Channel],
        public_url: str,
        consumer: str,
        *,
        retry_idle_ms: int = RETRY_IDLE_MS,
        backoff_base_ms: int = BACKOFF_BASE_MS,
    ) -> None:
        self._store = store
        self._registry = registry
        self._callbacks = callbacks
        self._channels = channels
        self._public_url = public_url
        self._consumer = consumer
        self._groups: set[str] = set()
        self._sending = asyncio.Semaphore(CONCURRENT_SENDS)
        self._retry_idle_ms = retry_idle_ms
        self._backoff_base_ms = backoff_base_ms

    async def run(self) -> None:
        """Send until cancelled (a cleanup_ctx task)."""
        failing = False
        while True:
            try:
                sent = await self.round()
                failing = False
            except ApiError as exc:  # Redis away: the messages wait in the outbox
                if not failing:
                    log.warning("call-back senders paused: %s", exc.message)
                failing, sent = True, 0
            except Exception:
                log.exception("call-back senders failed a round")
                sent = 0
            if not sent:
                await asyncio.sleep(IDLE_SLEEP_S * random.uniform(0.8, 1.2))

    async def round(self) -> int:
        """One read of every call-back wave's outbox: the messages handled."""
        handled = 0
        for wave, runtime in list(self._registry.loaded.items()):
            if not runtime.config.notify.enabled:
                continue
            try:
                handled += await self._wave_round(runtime)
            except UnknownWave:
                self._groups.discard(wave)
        return handled

    async def _wave_round(self, runtime: WaveRuntime) -> int:
        wave = runtime.config.id
        if wave not in self._groups:
            await self._store.outbox_group(wave)
            self._groups.add(wave)
        entries = await self._store.outbox_read(
            wave, self._consumer, READ_BATCH, self._retry_idle_ms
        )
        if not entries:
            return 0
        due_at = await self._store.outbox_due(wave, [entry_id for entry_id, _ in entries])
        now_ms = int(time.time() * 1000)
        due = [entry for entry, at in zip(entries, due_at, strict=True) if at <= now_ms]
        await asyncio.gather(*(self._handle(runtime, i, fields) for i, fields in due))
        return len(due)

    async def _handle(self, runtime: WaveRuntime, entry_id: str, fields: dict[str, str]) -> None:
        async with self._sending:
            await self._send(runtime, entry_id, fields)

    async def _send(self, runtime: WaveRuntime, entry_id: str, fields: dict[str, str]) -> None:
        wave, kind = runtime.config.id, fields.get("kind", "near")
        seq, stamp = int(fields.get("seq", "0")), fields.get("stamp", "")
        record = await self._store.callback_record(wave, seq)
        opened = self._open(runtime, record, stamp)
        if opened is None:  # the ticket ended or was admitted: nobody to call
            metrics.callback_messages.labels(wave, "none", kind, "dropped").inc()
            await self._store.outbox_done(wave, entry_id)
            return
        language, contact = opened
        channel = self._channels.get(contact.kind)
        code = self._callbacks.codes.code(wave, runtime.uid, stamp)
        url = return_url(self._public_url, wave, code)
        until_ms = int(fields.get("until", "0") or 0)
        subject, text = compose(runtime, kind, language, until_ms, url, time.time())
        message = Message(
            wave,
            kind,
            language,
            contact,
            subject,
            text,
            url,
            until_ms,
            f"{wave}:{stamp}:{kind}",
            runtime.config.notify.webhook_url,
        )
        try:
            if channel is None:
                raise DeliveryFailed(f"this deployment cannot send {contact.kind}", permanent=True)
            await channel.send(message)
        except DeliveryFailed as failure:
            await self._failed(wave, entry_id, fields, contact.kind, kind, failure)
            return
        await self._store.outbox_done(wave, entry_id)
        metrics.callback_messages.labels(wave, contact.kind, kind, "sent").inc()
        created_ms = int(entry_id.partition("-")[0])
        metrics.callback_delivery_seconds.labels(contact.kind).observe(
            max(0.0, time.time() - created_ms / 1000)
        )

    def _open(
        self, runtime: WaveRuntime, record: str | None, stamp: str
    ) -> tuple[str, Contact] | None:
        """(language, contact) of a ticket's call-back record, or None."""
        if record is None:
            return None
        language, _kind, _hash, _bucket, _changes, sealed = record.split("|", 5)
        cipher = self._callbacks.cipher
        plain = cipher.open(sealed, cipher.associated(runtime.config.id, runtime.uid, stamp))
        if plain is None:
            log.warning(
                "wave %s: a call-back contact did not decrypt (another contact key, or "
                "altered in Redis); its message is dropped",
                runtime.config.id,
            )
            return None
        return language, Contact.from_bytes(plain)

    async def _failed(
        self,
        wave: str,
        entry_id: str,
        fields: dict[str, str],
        channel: str,
        kind: str,
        failure: DeliveryFailed,
    ) -> None:
        tries = await self._store.outbox_failed(
            wave,
            entry_id,
            int(time.time() * 1000),
            self._backoff_base_ms,
            BACKOFF_CAP_MS,
            random.uniform(0.8, 1.2),
        )
        if failure.permanent or tries >= MAX_TRIES:
            metrics.callback_messages.labels(wave, channel, kind, "dead").inc()
            log.warning(
                "wave %s: a %s message by %s given up after %d tries: %s",
                wave, kind, channel, tries, failure.reason,
            )  # fmt: skip
            dead = {
                "seq": fields.get("seq", ""),
                "kind": kind,
                "channel": channel,
                "tries": str(tries),
                "reason": failure.reason,
                "at": datetime.now(UTC).isoformat(),
            }
            await self._store.outbox_dead(wave, entry_id, dead)
            return
        metrics.callback_messages.labels(wave, channel, kind, "failed").inc()
