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
