"""What a ticket holder is told: the status answer (and the join answer with its ticket).

Every state is told as it is (the OpenAPI document's TicketView):
- `prequeue`: joined before the opening; `eta_s` is the time until the opening.
- `waiting`: `position`, `ahead`, `eta_s`; `poll_after_ms` grows with the wait (pacing.py).
- `closing`: waiting, but the wave will close (time, or its quota) before this holder's turn
  by the current estimate; `closing_reason` says which. The place is kept.
- `paused`: the wave is paused by its operators: the place is kept, no ETA counts down.
- `admitted`: `token` and `redirect` to the registration site.
- `completed`: the admitted session was used and ended: nothing more to do.
- `expired`: the place or the session lapsed; joining again gives a place at the back.
- `closed`: the wave closed (or filled) before this holder's turn.
"""

from __future__ import annotations

import random
from typing import Literal, NotRequired, TypedDict
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from queue_service import pacing
from queue_service.protocol import TicketState
from queue_service.registry import WaveRuntime

_draws = random.Random()


class TicketView(TypedDict):
    """A plain dict: it goes straight to the JSON encoder, nothing is built twice."""

    wave: str
    state: str
    position: int | None
    ahead: int | None
    eta_s: int | None
    poll_after_ms: int
    closes_at: NotRequired[str]
    closing_reason: NotRequired[Literal["time", "quota"]]
    token: NotRequired[str]
    redirect: NotRequired[str]


FINAL_STATES = {
    TicketState.EXPIRED: "expired",
    TicketState.COMPLETED: "completed",
    TicketState.CLOSED: "closed",
}


def add_query(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), (name, value)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def waiting_view(
    runtime: WaveRuntime, ahead: int, now: float, *, paused: bool | None = None
) -> TicketView:
    """A holder ahead of whom `ahead` tickets wait: waiting, closing or paused (`paused`:
    the wave's state as the caller saw it; None = as the process's copy says)."""
    config, counts = runtime.config, runtime.counts
    eta = pacing.eta_s(ahead, runtime.pace_s)
    view: TicketView = {
        "wave": config.id,
        "state": "waiting",
        "position": ahead + 1,
        "ahead": ahead,
        "eta_s": eta,
        "poll_after_ms": pacing.poll_after_ms(eta),
        "closes_at": runtime.closes_at_iso,
    }
    if paused is None:
        paused = counts is not None and counts.state == "paused"
    if paused:
        view["state"] = "paused"
        view["eta_s"] = None
        return view
    places_left = config.quota - counts.admitted if counts is not None and config.quota else 0
    if config.quota and ahead * (1 - runtime.pace.skip_fraction) >= places_left:
        view["state"], view["closing_reason"] = "closing", "quota"
    elif now + eta >= config.closes_at:
        view["state"], view["closing_reason"] = "closing", "time"
    return view


def prequeue_view(runtime: WaveRuntime, now: float) -> TicketView:
    config, counts = runtime.config, runtime.counts
    until_open = config.opens_at - now
    size = counts.prequeue if counts is not None else 0
    return {
        "wave": config.id,
        "state": "prequeue",
        "position": None,
        "ahead": None,
        "eta_s": max(0, int(until_open)),
        "poll_after_ms": pacing.prequeue_poll_after_ms(until_open, size, _draws.random()),
        "closes_at": runtime.closes_at_iso,
    }


def admitted_view(runtime: WaveRuntime, token: str) -> TicketView:
    return {
        "wave": runtime.config.id,
        "state": "admitted",
        "position": 0,
        "ahead": 0,
        "eta_s": 0,
        "poll_after_ms": 0,
        "token": token,
        "redirect": add_query(runtime.config.origin_url, "gelombang_token", token),
    }


def final_view(runtime: WaveRuntime, state: TicketState) -> TicketView:
    return {
        "wave": runtime.config.id,
        "state": FINAL_STATES[state],
        "position": None,
        "ahead": None,
        "eta_s": None,
        "poll_after_ms": 0,
    }
