"""Call-backs' inputs: contacts checked and put in one form, a wave's notify object validated,
the webhook's signature as a gateway checks it, the enqueue token's verified contacts."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from queue_service.channels import SmtpSettings, sign_webhook, verify_webhook
from queue_service.contacts import (
    RETURN_CODE_CHARS,
    ContactCipher,
    ReturnCodes,
    load_or_create_key,
    normalise_phone,
    parse_contact,
)
from queue_service.enqueue import verified_contacts
from queue_service.errors import BadRequest
from queue_service.notify_config import check_channels, parse_notify

ALL = ("sms", "whatsapp", "email", "webpush")


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("0812 3456 7890", "+6281234567890"),
        ("0812-3456-7890", "+6281234567890"),
        ("62812.3456.7890", "+6281234567890"),
        ("+62 (812) 3456 7890", "+6281234567890"),
        ("０８１２３４５６７８９０", "+6281234567890"),  # full-width digits
        ("+447700900123", "+447700900123"),
    ],
)
def test_every_spelling_of_a_phone_number_is_one_number(typed: str, stored: str) -> None:
    assert normalise_phone(typed) == stored


@pytest.mark.parametrize("bad", ["12", "0812 34x5", "", "+" + "1" * 16, "call me"])
def test_what_cannot_be_a_phone_number_is_refused(bad: str) -> None:
    with pytest.raises(BadRequest):
        normalise_phone(bad)


def test_contacts_of_each_kind() -> None:
    email = parse_contact({"kind": "email", "address": " Budi@Example.CO.ID "}, ALL, {})
    assert email.address == "Budi@example.co.id"
    keys = {
        "p256dh": base64.urlsafe_b64encode(b"\x04" + os.urandom(64)).decode().rstrip("="),
        "auth": base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
    }
    push = parse_contact(
        {"kind": "webpush", "address": {"endpoint": "https://push.example/x", "keys": keys}},
        ALL,
        {},
    )
    assert '"endpoint":"https://push.example/x"' in push.address
    verified = parse_contact({"kind": "whatsapp"}, ALL, {"phone": "081234567890"})
    assert verified.address == "+6281234567890"
    for value, code in (
        ({"kind": "email", "address": "not-an-address"}, "invalid_contact"),
        ({"kind": "email"}, "invalid_contact"),  # no verified e-mail to stand in
        ({"kind": "sms", "address": "0812 3456 7890", "extra": 1}, "invalid_contact"),
        ({"kind": "webpush", "address": "{}"}, "invalid_contact"),
        ({"kind": "sms", "address": "0812 3456 7890"}, "channel_not_offered"),
    ):
        with pytest.raises(BadRequest) as refused:
            parse_contact(value, ("email", "webpush") if code.startswith("channel") else ALL, {})
        assert refused.value.code == code, value


def test_the_enqueue_token_gives_only_what_the_site_verified() -> None:
    claims = {
        "phone_number": "+6281234567890",
        "phone_number_verified": True,
        "email": "budi@example.co.id",
        "email_verified": False,
    }
    assert verified_contacts(claims) == {"phone": "+6281234567890"}
    assert verified_contacts({"phone_number": "+62812", "phone_number_verified": "true"}) == {}


def test_a_wave_notify_object_is_checked_and_partial_changes_keep_the_rest() -> None:
    config = parse_notify({"channels": ["sms"], "webhook_url": "https://gw.example/sms"})
    assert config.enabled and config.lead_s == 900 and config.return_window_s == 1800
    changed = parse_notify({"lead_s": 600}, config)
    assert changed.channels == ("sms",) and changed.lead_s == 600
    for bad in (
        {"channels": ["sms"]},  # no gateway
        {"channels": ["fax"]},
        {"lead_s": 5},
        {"return_window_s": -1},
        {"webhook_url": "ftp://x"},
        {"carry_over_to": "b"},  # told by which channel?
        {"channels": ["email"], "carry_over_order": "anywhere"},
        {"unknown": 1},
        "sms",
    ):
        with pytest.raises(BadRequest):
            parse_notify(bad)
    with pytest.raises(BadRequest, match="GELOMBANG_SMTP_URL"):
        check_channels(parse_notify({"channels": ["email"]}), frozenset({"sms"}), "w")
    with pytest.raises(BadRequest, match="another wave"):
        check_channels(
            parse_notify({"channels": ["email"], "carry_over_to": "w"}), frozenset(ALL), "w"
        )


def test_the_webhook_signature_is_what_a_gateway_checks() -> None:
    secret, body, now = os.urandom(32), b'{"id":"w:s:near"}', time.time()
    stamp = str(int(now))
    signature = sign_webhook(secret, stamp, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_webhook(secret, stamp, body, signature, now)
    assert not verify_webhook(secret, stamp, body + b" ", signature, now)  # altered
    assert not verify_webhook(os.urandom(32), stamp, body, signature, now)  # another key
    assert not verify_webhook(secret, stamp, body, signature, now + 301)  # replayed late
    assert not verify_webhook(secret, "soon", body, signature, now)


def test_return_codes_are_per_ticket_and_name_nothing() -> None:
    codes = ReturnCodes(os.urandom(32))
    one, two = codes.code("w", "uid", "stampA"), codes.code("w", "uid", "stampB")
    assert one != two and len(one) == RETURN_CODE_CHARS and codes.well_formed(one)
    assert codes.code("w", "uid", "stampA") == one  # the same link when a message is resent
    assert not codes.well_formed("x" * 5) and not codes.well_formed("é" * RETURN_CODE_CHARS)
    assert codes.digest(one)[0] != one


def test_deployment_keys_are_checked_and_a_development_key_is_made_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "contact.key"
    first = load_or_create_key(None, path, "contact key")
    assert load_or_create_key(None, path, "contact key") == first and len(first) == 32
    assert oct(path.stat().st_mode)[-3:] == "600"
    configured = base64.b64encode(os.urandom(32)).decode()
    assert load_or_create_key(configured, path, "contact key") == base64.b64decode(configured)
    with pytest.raises(ValueError, match="32 bytes"):
        load_or_create_key("c2hvcnQ=", path, "contact key")
    ContactCipher(first)
    smtp = SmtpSettings.from_url("smtps://u%40x:p%3A@mail.example:465", "a@example.go.id")
    assert (smtp.username, smtp.password, smtp.tls, smtp.port) == ("u@x", "p:", True, 465)
    with pytest.raises(ValueError):
        SmtpSettings.from_url("http://mail.example", "a@example.go.id")
