"""The queue's public API from a registrant's side, with no I/O: the requests to send, and one
parser from an HTTP answer to what it means.

Whoever sends the requests (the live driver with aiohttp, the Locust users with
geventhttpclient, a test with nothing at all) builds them here and hands what came back to
`parse_answer`; nobody else reads a body, a Retry-After or an error code.

- `Request`: one HTTP request, described: `target` (the queue, or the origin), method, path
  (relative to the target's base URL), `name` (the route with its variable parts as
  `[wave]`, for grouping), a JSON body or a multipart `Upload`, headers, and `expect`, the
  statuses that are a correct answer to it (a 429 is, for a status poll).
- `QueueApi(wave)`: the registrant's requests to one wave: `join`, `status`, `leave`,
  `complete`, `sign_in` at the registration site (a wave with verified joins), and for
  call-backs `notify` (opt in with a contact) and `come_back` (use a return link's code);
  `return_code(link)` is the code in a return link.
- `parse_answer(status, content, retry_after)` -> `Answer`: the status (None: no answer at
  all), the JSON body (an empty mapping for anything else), `retry_after_s`, `error_code`;
  `Answer.view` is the typed `TicketView` of a join or status answer: `state` is one of the
  closed set the service exports (`queue_service.protocol.HolderState`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from queue_service.protocol import HolderState

QUEUE = "queue"
ORIGIN = "origin"
"""Where a request goes (`Request.target`): each executor knows both base URLs."""

WAVE_ROUTE = "/api/v1/waves/[wave]"
JOIN = f"{WAVE_ROUTE}/join"
STATUS = f"{WAVE_ROUTE}/status"
LEAVE = f"{WAVE_ROUTE}/leave"
COMPLETE = f"{WAVE_ROUTE}/complete"
NOTIFY = f"{WAVE_ROUTE}/notify"
RETURN = f"{WAVE_ROUTE}/return"
PAGE = "/w/[wave]"
SIGN_IN = "origin sign-in"

WAVE_NOT_OPEN_YET = "wave_not_open_yet"
"""The join error code that means "come back at the opening" (409 with Retry-After)."""

FINAL_STATES = frozenset({HolderState.COMPLETED, HolderState.EXPIRED, HolderState.CLOSED})
"""States after which polling changes nothing."""


@dataclass(frozen=True)
class Upload:
    """A multipart form: text fields and one file."""

    fields: Mapping[str, str]
    file_field: str
    filename: str
    content: bytes
    content_type: str

    def file_tuple(self) -> tuple[str, bytes, str]:
        """`(filename, content, content type)`, as `requests` and urllib3 take a file."""
        return self.filename, self.content, self.content_type

    def file_object(self) -> io.BytesIO:
        """The content as a file (aiohttp warns about large raw-bytes form fields)."""
        return io.BytesIO(self.content)


@dataclass(frozen=True, slots=True)
class Request:
    target: str
    method: str
    path: str
    name: str
    json: Mapping[str, Any] | None = None
    upload: Upload | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    expect: frozenset[int] = frozenset()
    """The statuses that are a correct answer here; empty: any answer below 500."""

    def with_headers(self, **headers: str) -> Request:
        return replace(self, headers={**self.headers, **headers})


@dataclass(frozen=True, slots=True)
class TicketView:
    """What a join or status answer told the holder."""

    state: HolderState
    ticket: str | None
    position: int | None
    ahead: int | None
    eta_s: float | None
    poll_after_ms: int | None
    token: str | None

    @property
    def seq(self) -> int | None:
        """The ticket's number (its place in join order), from the ticket itself."""
        if self.ticket is None:
            return None
        number = self.ticket.split(".", 1)[0]
        return int(number) if number.isdigit() else None

    @property
    def admitted(self) -> bool:
        return self.state is HolderState.ADMITTED and self.token is not None


_STATES = {state.value: state for state in HolderState}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def ticket_view(body: Mapping[str, Any]) -> TicketView | None:
    """The view in a join or status body, or None when it names no state we know."""
    state = _STATES.get(body.get("state"))  # type: ignore[arg-type]
    if state is None:
        return None
    return TicketView(
        state=state,
        ticket=_text(body.get("ticket")),
        position=_int(body.get("position")),
        ahead=_int(body.get("ahead")),
        eta_s=_number(body.get("eta_s")),
        poll_after_ms=_int(body.get("poll_after_ms")),
        token=_text(body.get("token")),
    )


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header in seconds (the only form the service and the origin send)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None
    """None: no answer (a timeout, a refused or reset connection)."""
    body: Mapping[str, Any]
    retry_after_s: float | None = None
    elapsed_s: float = 0.0
    reset: bool = False
    """No answer to an upload because the connection was reset while it was sent (a server
    that refuses an upload early, before reading it)."""
    rate_limit_policy: str = ""
    """The RateLimit-Policy header of a 429: which rule refused (e.g. `"join_per_ip";...`)."""

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error")
        return str(error.get("code")) if isinstance(error, dict) else None

    @property
    def view(self) -> TicketView | None:
        if self.status not in (200, 201):
            return None
        return ticket_view(self.body)


NO_ANSWER = Answer(None, {})


def parse_answer(
    status: int | None,
    content: bytes | None,
    retry_after: str | None = None,
    *,
    elapsed_s: float = 0.0,
    reset: bool = False,
    rate_limit_policy: str | None = None,
) -> Answer:
    """One HTTP answer as the registrant reads it; `status` None: no answer at all."""
    body: Any = {}
    if content:
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = {}
    return Answer(
        status=status,
        body=body if isinstance(body, dict) else {},
        retry_after_s=retry_after_s(retry_after),
        elapsed_s=elapsed_s,
        reset=reset,
        rate_limit_policy=rate_limit_policy or "",
    )


class QueueApi:
    """The requests one registrant sends to one wave."""

    def __init__(self, wave: str) -> None:
        self.wave = wave
        self.base = f"/api/v1/waves/{wave}"

    def join(self, identity: Mapping[str, str], ticket: str | None = None) -> Request:
        """`identity`: `{"registrant": id}` or `{"enqueue_token": token}`; `ticket`: the
        holder's own ticket, the proof that hands its place back."""
        headers = {"X-Queue-Ticket": ticket} if ticket else {}
        return Request(
            QUEUE, "POST", f"{self.base}/join", JOIN, json=identity, headers=headers,
            expect=frozenset({200, 201, 409, 429}),
        )  # fmt: skip

    def status(self, ticket: str) -> Request:
        return Request(
            QUEUE, "GET", f"{self.base}/status", STATUS, headers={"X-Queue-Ticket": ticket},
            expect=frozenset({200, 429}),
        )  # fmt: skip

    def leave(self, ticket: str) -> Request:
        return Request(
            QUEUE, "POST", f"{self.base}/leave", LEAVE, headers={"X-Queue-Ticket": ticket},
            expect=frozenset({204, 401, 404}),
        )  # fmt: skip

    def complete(self, token: str) -> Request:
        return Request(
            QUEUE, "POST", f"{self.base}/complete", COMPLETE,
            headers={"Authorization": f"Bearer {token}"}, expect=frozenset({204}),
        )  # fmt: skip

    def page(self) -> Request:
        return Request(QUEUE, "GET", f"/w/{self.wave}", PAGE, expect=frozenset({200}))

    def notify(self, ticket: str, kind: str, address: str) -> Request:
        """Opt in to call-backs: leave the line and be told when the turn is near. 409
        `not_waiting` is an answer, not a failure: admitted between the status that offered
        the opt-in and this request (a loaded machine widens that race); they keep the page."""
        return Request(
            QUEUE, "POST", f"{self.base}/notify", NOTIFY, headers={"X-Queue-Ticket": ticket},
            json={"contact": {"kind": kind, "address": address}, "language": "id"},
            expect=frozenset({200, 201, 409}),
        )  # fmt: skip

    def come_back(self, code: str) -> Request:
        """Use the return link's code (what the page's button does, for an app): the answer
        says `result` (back, waiting, closed) and gives the ticket back."""
        return Request(
            QUEUE, "POST", f"{self.base}/return", RETURN, json={"code": code},
            expect=frozenset({200, 409}),
        )  # fmt: skip

    def sign_in(self, email: str, phone: str) -> Request:
        """Signing in at the registration site, which vouches for the registrant with an
        enqueue token (a wave with verified joins)."""
        return Request(
            ORIGIN, "POST", "/api/v1/sign-in", SIGN_IN,
            json={"email": email, "phone": phone, "wave": self.wave}, expect=frozenset({200}),
        )  # fmt: skip


def return_code(link: str) -> str:
    """The one-time code of a return link (`.../w/<wave>/return?code=<code>`)."""
    values = parse_qs(urlsplit(link).query).get("code", [""])
    return values[0]


def enqueue_token(answer: Answer) -> str | None:
    """The enqueue token a sign-in answer carries."""
    return _text(answer.body.get("enqueue_token")) if answer.status == 200 else None
