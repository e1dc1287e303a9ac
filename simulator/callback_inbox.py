"""The transport-free core of a rehearsal's SMS/WhatsApp gateway: what it does with a call-back
message the queue POSTs to the wave's `notify.webhook_url`, whatever server received it (the
live driver's aiohttp one, `simulator.driver.gateway`; the Locust master's gevent one,
`loadtests.callback_gateway`).

- `Inbox.take` checks a delivery as a real gateway would (docs/callbacks.md): the signature
  over the raw body and the timestamp (`queue_service.channels.verify_webhook`), 401 to a
  forgery; a message seen before (its idempotency key) is taken again (200) and handed on once.
- `AddressBook` hands a message to the registrant listed under its address (normalised as the
  queue sends to it: E.164 for a phone number). A message that comes before its registrant is
  listed is held, and handed over when it is: the queue's outbox may send before the answer to
  the opt-in reaches the registrant (or, in a distributed Locust run, before a worker hears it).
  Messages still held at the end are the strays: to nobody a rehearsal listed.

Receiving and handing on are apart because in a distributed Locust run they happen in different
processes: the master's gateway takes the message, the worker whose user gave the address hands
it over.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from queue_service.channels import verify_webhook
from queue_service.contacts import parse_contact

GATEWAY_PATH = "/gateway"
"""Where a rehearsal's gateway takes the queue's POSTs (the wave's `notify.webhook_url`)."""
FORGED = 401
TAKEN = 200
UNREADABLE = 400


class Recipient(Protocol):
    def deliver(self, kind: str, link: str) -> None:
        """A call-back message reached them: its kind ('near', 'turn') and return link."""


def normalised(kind: str, address: str) -> str:
    """The address as the queue will send to it (E.164 for a phone number)."""
    return parse_contact({"kind": kind, "address": address}, (kind,), {}).address


@dataclass(frozen=True, slots=True)
class CallbackMessage:
    to: str
    """The address as the queue sent to it (normalised)."""
    kind: str
    link: str
    """The one-time return link."""

    def as_dict(self) -> dict[str, str]:
        return {"to": self.to, "kind": self.kind, "link": self.link}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallbackMessage:
        return cls(str(data.get("to", "")), str(data.get("kind", "")), str(data.get("link", "")))


@dataclass(frozen=True, slots=True)
class Receipt:
    status: int
    """The answer to the queue: 200 taken (new or seen before), 401 forged, 400 unreadable."""
    message: CallbackMessage | None = None
    """A genuine message seen for the first time: to hand on. None otherwise."""


class Inbox:
    """Verification and de-duplication; one per gateway."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.clock = clock
        self.seen: set[str] = set()
        self.forged = self.taken = 0
        """Deliveries refused as forged (or stale); genuine messages taken the first time."""

    def take(self, body: bytes, timestamp: str, signature: str, key: str) -> Receipt:
        """One delivery: the raw body and the X-Gelombang-Timestamp, X-Gelombang-Signature
        and Idempotency-Key headers ('' when absent)."""
        if not verify_webhook(self.secret, timestamp, body, signature, self.clock()):
            self.forged += 1
            return Receipt(FORGED)
        if key in self.seen:
            return Receipt(TAKEN)  # a retry of a message taken before: sent once
        try:
            fields = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Receipt(UNREADABLE)
        if not isinstance(fields, dict):
            return Receipt(UNREADABLE)
        self.seen.add(key)
        self.taken += 1
        message = CallbackMessage(
            to=str(fields.get("to", "")),
            kind=str(fields.get("kind", "")),
            link=str(fields.get("return_url", "")),
        )
        return Receipt(TAKEN, message)


class AddressBook:
    """Who is listed under which address, in one process; messages held for the unlisted."""

    def __init__(self) -> None:
        self.recipients: dict[str, Recipient] = {}
        self.held: dict[str, list[CallbackMessage]] = {}
        self.delivered = 0

    def expect(self, kind: str, address: str, recipient: Recipient) -> None:
        """List `recipient` under its address, and hand it what came for it already."""
        to = normalised(kind, address)
        self.recipients[to] = recipient
        for message in self.held.pop(to, []):
            self._hand(recipient, message)

    def deliver(self, message: CallbackMessage) -> bool:
        """Hand the message to whoever is listed under its address (True), or hold it."""
        recipient = self.recipients.get(message.to)
        if recipient is None:
            self.held.setdefault(message.to, []).append(message)
            return False
        self._hand(recipient, message)
        return True

    @property
    def stray(self) -> int:
        """Messages held for an address nobody listed (yet)."""
        return sum(len(messages) for messages in self.held.values())

    def _hand(self, recipient: Recipient, message: CallbackMessage) -> None:
        self.delivered += 1
        recipient.deliver(message.kind, message.link)
