"""The live driver's SMS/WhatsApp gateway: a webhook receiver on 127.0.0.1 that takes the
wave's call-back messages as a real gateway would (docs/callbacks.md), and hands each to the
registrant it is addressed to instead of a phone.

- The wave's `notify.webhook_url` points here (`Gateway.url`); the queue's outbox POSTs each
  message signed with the deployment's webhook secret. The gateway checks the signature over
  the raw body and the timestamp, and answers 401 to a forgery, 2xx to a message taken; a
  message seen before (its idempotency key) is taken again and delivered once
  (`simulator.callback_inbox.Inbox`, shared with the Locust rehearsal's gateway).
- A registrant who opts in is listed under the address it gave (`expect`); a message to that
  address is delivered to it (`LiveRegistrant.deliver`: the kind, the return link, the time).
  A message to nobody listed is held and counted (`stray`), as a real gateway would send it
  anyway (`simulator.callback_inbox.AddressBook`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from queue_service.channels import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from simulator.callback_inbox import GATEWAY_PATH, AddressBook, Inbox, Recipient


class Gateway:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self.inbox = Inbox(secret, clock)
        self.book = AddressBook()
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def forged(self) -> int:
        return self.inbox.forged

    @property
    def stray(self) -> int:
        return self.book.stray

    @property
    def delivered(self) -> int:
        return self.book.delivered

    def expect(self, kind: str, address: str, recipient: Recipient) -> None:
        self.book.expect(kind, address, recipient)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(GATEWAY_PATH, self.receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{GATEWAY_PATH}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def receive(self, request: web.Request) -> web.Response:
        receipt = self.inbox.take(
            await request.read(),
            request.headers.get(TIMESTAMP_HEADER, ""),
            request.headers.get(SIGNATURE_HEADER, ""),
            request.headers.get(IDEMPOTENCY_HEADER, ""),
        )
        if receipt.message is not None:
            self.book.deliver(receipt.message)
        return web.Response(status=receipt.status)
