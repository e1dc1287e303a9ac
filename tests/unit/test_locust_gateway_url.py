"""The URL a Locust rehearsal puts in the wave's webhook_url for its gateway: one the queue can
call. A wildcard bind (0.0.0.0, ::) is no address another machine can dial, so the URL names this
machine; an operator behind NAT or a proxy gives the URL outright."""

from __future__ import annotations

import socket

import pytest

from loadtests.callback_gateway import advertised_url
from loadtests.targets import TargetRefused, check_public_url
from simulator.callback_inbox import GATEWAY_PATH


def test_the_listening_address_is_the_url_unless_it_is_a_wildcard() -> None:
    assert advertised_url("127.0.0.1", 8123) == f"http://127.0.0.1:8123{GATEWAY_PATH}"
    assert advertised_url("::1", 8123) == f"http://[::1]:8123{GATEWAY_PATH}"
    for wildcard in ("0.0.0.0", "::", ""):
        url = advertised_url(wildcard, 8123)
        assert "0.0.0.0" not in url and "[::]" not in url, url
        assert url == f"http://{socket.getfqdn()}:8123{GATEWAY_PATH}", url


def test_an_operator_given_url_wins_and_must_be_absolute_http() -> None:
    public = "https://rehearsal.example.go.id/sms/"
    assert advertised_url("0.0.0.0", 8123, public) == public
    # as given: a proxy may route on the trailing slash
    assert check_public_url(public, what="gateway URL") == public
    assert check_public_url("", what="gateway URL") == ""
    for wrong in ("rehearsal.example.go.id/sms", "ftp://10.0.0.1/gateway"):
        with pytest.raises(TargetRefused):
            check_public_url(wrong, what="gateway URL")
