"""Call-backs in a Locust rehearsal (issue 24): registrants opt in, leave the line, and come back
by the link the queue sends them, as the live driver's do.

Design: one gateway, where the wave is prepared. The process that creates the wave (the
master, or the single local process) runs the SMS/WhatsApp gateway
(`loadtests.callback_gateway`, gevent's WSGI server, on `--gateway-host:--gateway-port`,
loopback and a free port by default) and names it in the wave's `notify.webhook_url`
(`wave_setup.rehearsal_wave`). One gateway and not one per worker, because a wave has one
webhook_url; and at the master, because the master alone knows the URL before the wave is put
(workers may come and go). It checks every delivery with the webhook secret
(`--webhook-secret` or GELOMBANG_WEBHOOK_SECRET, base64; a scenario with call-backs and no
secret stops the run at start, saying so) and takes each message once
(`simulator.callback_inbox.Inbox`, the live driver's own checks).

A message taken is handed on with Locust's custom messages (`runner.send_message`): the master
sends it to every worker (it does not know which one's user gave the address); a local
runner's `send_message` calls its own listener, so a single process takes the same path. In
every process that runs users, the listener hands it to the user listed under its address
(`simulator.callback_inbox.AddressBook`: a message that comes before its user is listed waits
for it), through that user's `Mailbox`, a gevent `AsyncResult`: a `RegistrantUser` in
`Pause(until_notified=True)` blocks on it, waking each second to see whether the run is
stopping (a user waiting for a call never holds the stop up).

Counted for the verdict (`loadtests.counters`, summed across workers by `loadtests.tally`):
messages taken and forged deliveries at the gateway, messages handed to a user where the user
runs; opt-ins, returns, admissions and registrations after a return by the journeys.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gevent.event import AsyncResult
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadtests import counters
from loadtests.callback_gateway import CallbackGateway
from loadtests.options import LoadSettings
from loadtests.runtime import load_settings
from loadtests.tally import TALLY
from queue_service.contacts import load_or_create_key
from simulator.callback_inbox import FORGED, AddressBook, CallbackMessage, Inbox, Receipt

log = logging.getLogger("loadtests.callbacks")

MESSAGE_TYPE = "gelombang_callback"
MISSING_SECRET = (
    "a scenario with call-backs needs the deployment's webhook secret "
    "(--webhook-secret or GELOMBANG_WEBHOOK_SECRET, base64): the rehearsal's gateway checks "
    "the queue's signatures with it"
)
NO_PROCESS_EXIT = 2


class Mailbox:
    """One user's phone: the return link of the first message that reached it."""

    def __init__(self) -> None:
        self.link: AsyncResult[str] = AsyncResult()

    def deliver(self, kind: str, link: str) -> None:
        TALLY.add(counters.CALLBACK_DELIVERED)
        if not self.link.ready():  # the first message brings them back; later ones just ring
            self.link.set(link)

    def wait(self, timeout_s: float) -> str | None:
        return self.link.get(timeout=timeout_s) if self.link.wait(timeout_s) else None


BOOK = AddressBook()
"""Who opted in, in this process (a worker's users, or the local process's)."""
_gateway: CallbackGateway | None = None


def expect(kind: str, address: str) -> Mailbox:
    """A user opted in with this contact: the mailbox its messages will reach."""
    mailbox = Mailbox()
    BOOK.expect(kind, address, mailbox)
    return mailbox


def gateway_url() -> str | None:
    """The URL of this process's gateway (None: no call-backs, or not the master)."""
    return _gateway.url if _gateway is not None else None


def webhook_secret(settings: LoadSettings) -> bytes | None:
    """The key the gateway checks signatures with: None when the scenario has no call-backs; a
    ValueError saying what to set when it has and none is given (or it is not 32 bytes)."""
    if not settings.scenario.callbacks.enabled:
        return None
    if not settings.webhook_secret:
        raise ValueError(MISSING_SECRET)
    return load_or_create_key(settings.webhook_secret, Path(), "webhook secret")


# ---------------------------------------------------------------------------- wiring


def _start(environment: Any, **_kwargs: Any) -> None:
    """At init: every process that runs users listens for handed-on messages; the process that
    prepares the wave opens the gateway (or stops at once without a usable secret)."""
    global _gateway
    runner = environment.runner
    if runner is None:
        return
    if not isinstance(runner, MasterRunner):
        runner.register_message(MESSAGE_TYPE, _handed_on)
    if isinstance(runner, WorkerRunner):
        return  # the master has the gateway
    settings = load_settings(environment)
    try:
        secret = webhook_secret(settings)
    except ValueError as exc:
        log.error("%s", exc)
        raise SystemExit(NO_PROCESS_EXIT) from exc
    if secret is None:
        return

    def on_receipt(receipt: Receipt) -> None:
        if receipt.status == FORGED:
            TALLY.add(counters.CALLBACK_FORGED)
        if receipt.message is not None:
            TALLY.add(counters.CALLBACK_MESSAGES)
            runner.send_message(MESSAGE_TYPE, receipt.message.as_dict())

    _gateway = CallbackGateway(Inbox(secret), on_receipt)
    url = _gateway.start(settings.gateway_host, settings.gateway_port, settings.gateway_url)
    log.info("call-backs: the rehearsal's gateway listens at %s", url)


def _handed_on(environment: Any, msg: Any, **_kwargs: Any) -> None:
    BOOK.deliver(CallbackMessage.from_dict(msg.data or {}))


def _stop(environment: Any, **_kwargs: Any) -> None:
    global _gateway
    if _gateway is not None:
        _gateway.stop()
        _gateway = None


events.init.add_listener(_start)
events.quitting.add_listener(_stop)
