"""The live driver's SMS/WhatsApp gateway: a webhook receiver on 127.0.0.1 that takes the
wave's call-back messages as a real gateway would (docs/callbacks.md), and hands each to the
registrant it is addressed to instead of a phone.

- The wave's `notify.webhook_url` points here (`Gateway.url`); the queue's outbox POSTs each
  message signed with the deployment's webhook secret. The gateway checks the signature over
  the raw body and the timestamp (`queue_service.channels.verify_webhook`, what a gateway
  does) and answers 401 to a forgery, 2xx to a message taken; a message seen before (its
  idempotency key) is taken again and delivered once.
- A registrant who opts in is listed under the address it gave (`expect`); a message to that
  address is delivered to it (`LiveRegistrant.deliver`: the kind, the return link, the time).
  A message to nobody listed is counted (`stray`), as a real gateway would send it anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import orjson
from aiohttp import web

from queue_service.channels import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_webhook,
)
from queue_service.contacts import parse_contact

PATH = "/gateway"


class Recipient(Protocol):
    def deliver(self, kind: str, link: str) -> None: ...


def normalised(kind: str, address: str) -> str:
    """The address as the queue will send to it (E.164 for a phone number)."""
    return parse_contact({"kind": kind, "address": address}, (kind,), {}).address


class Gateway:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.clock = clock
        self.recipients: dict[str, Recipient] = {}
        self.seen: set[str] = set()
        self.forged = self.stray = self.delivered = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    def expect(self, kind: str, address: str, recipient: Recipient) -> None:
        self.recipients[normalised(kind, address)] = recipient

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(PATH, self.receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{PATH}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        genuine = verify_webhook(
            self.secret,
            request.headers.get(TIMESTAMP_HEADER, ""),
            body,
            request.headers.get(SIGNATURE_HEADER, ""),
            self.clock(),
        )
        if not genuine:
            self.forged += 1
            return web.Response(status=401)
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if key in self.seen:
            return web.Response(status=200)  # taken before: sent once
        self.seen.add(key)
        message = orjson.loads(body)
        recipient = self.recipients.get(str(message.get("to", "")))
        if recipient is None:
            self.stray += 1
        else:
            self.delivered += 1
            recipient.deliver(str(message.get("kind", "")), str(message.get("return_url", "")))
        return web.Response(status=200)
