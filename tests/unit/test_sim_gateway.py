"""The live driver's SMS/WhatsApp gateway: it takes the queue's signed webhook as a gateway
does (the signature and the timestamp checked, a message sent twice delivered once) and hands
each message to the registrant listed under its address."""

from __future__ import annotations

import argparse
import time

import aiohttp
import orjson
import pytest

from queue_service.channels import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign_webhook,
)
from simulator.callback_inbox import FORGED, TAKEN, AddressBook, CallbackMessage, Inbox
from simulator.commands import simulate
from simulator.driver.gateway import Gateway
from tests.helpers.paths import TEST_SCENARIOS

SECRET = bytes(range(32))


class Phone:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def deliver(self, kind: str, link: str) -> None:
        self.messages.append((kind, link))


def signed(body: bytes, key: str, secret: bytes = SECRET, at: float | None = None) -> dict:
    timestamp = str(int(time.time() if at is None else at))
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign_webhook(secret, timestamp, body),
        IDEMPOTENCY_HEADER: key,
        "Content-Type": "application/json",
    }


async def test_the_gateway_delivers_genuine_messages_once_to_their_address() -> None:
    gateway, phone = Gateway(SECRET), Phone()
    gateway.expect("sms", "0812 3456-7890", phone)  # listed as the queue will send to it
    url = await gateway.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        message = {
            "kind": "near",
            "to": "+6281234567890",
            "return_url": "http://q/w/w/return?code=c",
        }
        body = orjson.dumps(message)
        async with aiohttp.ClientSession() as session:
            for headers in (signed(body, "w:a:near"), signed(body, "w:a:near")):
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 200
            forged = signed(body, "w:b:near", secret=b"x" * 32)
            stale = signed(body, "w:c:near", at=time.time() - 3600)
            for headers in (forged, stale):
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 401
            other = orjson.dumps({**message, "to": "+6289999999999"})
            async with session.post(url, data=other, headers=signed(other, "w:d:near")) as r:
                assert r.status == 200
    finally:
        await gateway.stop()
    assert phone.messages == [("near", "http://q/w/w/return?code=c")]
    assert (gateway.delivered, gateway.forged, gateway.stray) == (1, 2, 1)


def test_a_live_run_with_call_backs_and_no_secret_is_refused_saying_what_to_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GELOMBANG_WEBHOOK_SECRET", raising=False)
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    args = parser.parse_args(
        ["--scenario", str(TEST_SCENARIOS / "callbacks.toml"), "--mode", "queued",
         "--queue-url", "http://127.0.0.1:9", "--origin-url", "http://127.0.0.1:8"]
    )  # fmt: skip
    assert simulate.run(args) == 2
    assert "GELOMBANG_WEBHOOK_SECRET" in capsys.readouterr().err


def test_the_inbox_takes_a_genuine_message_once_and_refuses_forgeries() -> None:
    """The transport-free core both gateways share (the driver's, the Locust master's)."""
    inbox = Inbox(SECRET)
    body = orjson.dumps({"kind": "turn", "to": "+6281234567890", "return_url": "http://q/r"})
    headers = signed(body, "w:a:turn")
    take = (body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], "w:a:turn")
    first, again = inbox.take(*take), inbox.take(*take)
    assert first.status == again.status == TAKEN
    assert first.message == CallbackMessage("+6281234567890", "turn", "http://q/r")
    assert again.message is None  # a retry: answered, not handed on twice
    wrong = signed(body, "w:b:turn", secret=b"y" * 32)
    refused = inbox.take(body, wrong[TIMESTAMP_HEADER], wrong[SIGNATURE_HEADER], "w:b:turn")
    assert (refused.status, refused.message) == (FORGED, None)
    assert (inbox.taken, inbox.forged) == (1, 1)
    # What a Locust master forwards to its workers comes back the same.
    assert CallbackMessage.from_dict(first.message.as_dict()) == first.message


def test_a_message_that_comes_before_its_registrant_is_listed_waits_for_it() -> None:
    """The outbox may send before the opt-in's answer reaches the registrant (or, in a
    distributed rehearsal, before the worker hears the message): it is held, not lost."""
    book, phone = AddressBook(), Phone()
    early = CallbackMessage("+6281234567890", "near", "http://q/r1")
    assert book.deliver(early) is False
    assert book.stray == 1 and phone.messages == []
    book.expect("whatsapp", "081234567890", phone)
    assert phone.messages == [("near", "http://q/r1")]
    assert book.deliver(CallbackMessage("+6281234567890", "turn", "http://q/r1")) is True
    assert phone.messages[-1] == ("turn", "http://q/r1")
    assert (book.delivered, book.stray) == (2, 0)
