"""Call-backs (issue 24, docs/callbacks.md): leave the line and be called back.

The use cases between the HTTP handlers and the Redis scripts:
- `opt_in`: a holder gives a contact (join body, `POST /api/v1/waves/{wave}/notify`, the waiting
  page's form); it is checked, encrypted and stored with the ticket (lua/optin.lua). From then on
  the holder's poll deadline no longer applies.
- `notify_step`: run by the admission loop, about once a second per wave: holders whose turn is
  within the wave's `lead_s` (this process's pace estimate turns seconds into places) are told,
  each once (lua/notify.lua); the cursor reaching an absent holder calls them (lua/admit.lua).
- `come_back`: the one-time return link (lua/return_link.lua): the ticket is handed back to
  whoever holds the link, on any device, and a called holder is admitted first.

The state machine of an opted-in ticket (protocol.SeenMark) is drawn in docs/callbacks.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from queue_service import metrics
from queue_service.contacts import (
    Contact,
    ContactCipher,
    ReturnCodes,
    parse_contact,
    parse_language,
)
from queue_service.errors import (
    BadRequest,
    Conflict,
    RateLimited,
    Unauthorized,
)
from queue_service.registry import WaveRuntime
from queue_service.store import Store
from queue_service.tickets import Ticket

log = logging.getLogger(__name__)

MAX_CONTACT_CHANGES = 3
"""A holder may change their contact this often: a ticket is not a way to send SMS to anyone."""
NOTIFY_INTERVAL_S = 1.0
"""How often a process runs the notify step of a wave with call-backs."""
NOTIFY_BATCH = 1000
STATES_BY_MARK = {"O": "away", "N": "told", "K": "called", "R": "back"}


class OptIn(NamedTuple):
    created: bool
    """A new opt-in (False: the contact of one that exists was changed)."""
    view: dict[str, Any]


class Return(NamedTuple):
    result: str
    """'back' (admitted at the next step), 'waiting' (not reached yet), 'closed'."""
    ticket: Ticket


def callback_view(runtime: WaveRuntime, contact: Contact, mark: str) -> dict[str, Any]:
    """What the holder is told after opting in (the API's and the page's answer)."""
    notify = runtime.config.notify
    return {
        "wave": runtime.config.id,
        "callback": {
            "kind": contact.kind,
            "state": STATES_BY_MARK.get(mark, "away"),
            "lead_s": notify.lead_s,
            "return_window_s": notify.return_window_s,
        },
    }


class Callbacks:
    def __init__(
        self,
        store: Store,
        cipher: ContactCipher,
        codes: ReturnCodes,
        channels: frozenset[str],
        vapid_public_key: str = "",
    ) -> None:
        self.vapid_public_key = vapid_public_key
        """The Web Push applicationServerKey pages subscribe with."""
        self.store = store
        self.cipher = cipher
        self.codes = codes
        self.channels = channels
        """The contact kinds this deployment can send (settings: webhook, SMTP, VAPID)."""

    # -- opt in ---------------------------------------------------------------------------

    async def opt_in(
        self,
        runtime: WaveRuntime,
        ticket: Ticket,
        body: Mapping[str, Any],
        verified: Mapping[str, str] | None = None,
    ) -> OptIn:
        """`body`: {"contact": {"kind", "address"}, "language": "id" | "en"}; `verified`: the
        contacts the registration site verified for this join (an address may be left out)."""
        config = runtime.config
        if not config.notify.enabled:
            raise Conflict(
                "This wave does not call people back: keep the waiting page open.",
                code="callbacks_off",
            )
        contact = parse_contact(body.get("contact"), config.notify.channels, verified or {})
        language = parse_language(body.get("language"))
        code = self.codes.code(config.id, runtime.uid, ticket.stamp)
        code_hash, bucket = self.codes.digest(code)
        sealed = self.cipher.seal(
            contact.to_bytes(), self.cipher.associated(config.id, runtime.uid, ticket.stamp)
        )
        head = f"{language}|{contact.kind}|{code_hash}|{bucket}"
        result, mark = await self.store.opt_in(config.id, ticket, head, sealed, MAX_CONTACT_CHANGES)
        if result == "none":
            raise Unauthorized("The ticket is not known in this wave.", code="unknown_ticket")
        if result == "not_waiting":
            raise Conflict(
                "Only a ticket still waiting can be called back (this one was admitted, ended, "
                "or the wave closed).",
                code="not_waiting",
            )
        if result == "too_many_changes":
            raise RateLimited(
                f"The contact of a place can be changed {MAX_CONTACT_CHANGES} times at most.",
                code="too_many_contact_changes",
                retry_after_s=3600,
            )
        if result == "opted_in":
            metrics.callback_optins.labels(config.id, contact.kind).inc()
        return OptIn(result == "opted_in", callback_view(runtime, contact, mark))

    async def keep_account(self, runtime: WaveRuntime, ticket: Ticket, account: str) -> None:
        """A verified holder's account, encrypted, for carrying their standing over to the next
        wave if this one ends before their turn (carry_over.py)."""
        config = runtime.config
        associated = self.cipher.associated(config.id, runtime.uid, ticket.stamp, "account")
        await self.store.keep_account(
            config.id, ticket.seq, self.cipher.seal(account.encode(), associated)
        )

    # -- the notify step ------------------------------------------------------------------

    async def notify_step(self, runtime: WaveRuntime) -> int:
        """Tell the holders whose turn is near (their ETA under lead_s). Holders told now."""
        counts, config = runtime.counts, runtime.config
        if counts is None or counts.state != "open" or not config.notify.enabled:
            return 0
        places = math.ceil(config.notify.lead_s / max(runtime.pace_s, 1e-6))
        told, pending = await self.store.notify_near(config.id, min(places, 10**12), NOTIFY_BATCH)
        metrics.callback_series(config.id).pending.set(pending)
        return told

    # -- the return link ------------------------------------------------------------------

    async def come_back(self, runtime: WaveRuntime, code: str) -> Return:
        """Use a return link's code, once: the ticket it names, for the cookie."""
        config = runtime.config
        if not self.codes.well_formed(code):
            raise BadRequest("This return link is not valid.", code="invalid_return_link")
        code_hash, bucket = self.codes.digest(code)
        result, ticket = await self.store.return_link(config.id, code_hash, bucket)
        metrics.callback_links.labels(config.id, result).inc()
        if result == "unknown":
            raise Conflict(
                "This return link was used already, or its place has ended. If you used it, "
                "your place is on the phone or browser where you opened it.",
                code="return_link_used",
            )
        return Return(result, ticket)
