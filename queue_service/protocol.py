"""The codes the Lua scripts and Python exchange, defined once.

The hot-path scripts answer with small integers (cheap for the client to parse), so both sides
must agree on what each number means. They agree by construction: `lua_prelude()` renders these
enums as Lua tables that `store.py` prepends to every script, and Python decodes replies with the
same enums. No script defines a code table of its own (a test checks it).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class TicketState(IntEnum):
    """What a ticket is, as a script sees it (`ticket_view` in lua/_lib.lua)."""

    WAITING = 0
    PREQUEUE = 1
    ADMITTED = 2
    EXPIRED = 3
    """The place or the session lapsed: abandoned, left, or a session that ran out."""
    CLOSED = 4
    """Never admitted, and the wave closed or filled its quota."""
    UNKNOWN = 5
    """No such ticket in this wave (yet); no script answers it since finished tickets are
    reclaimed (a ticket issued here with no state is EXPIRED). Kept so the codes stay stable."""
    COMPLETED = 6
    """The admitted session was used and ended (complete, or leave while admitted)."""
    LOST = 7
    """Issued just before the state store lost its most recent writes (a restore, a failover
    to a lagging replica): the number may now belong to somebody else, so it is refused."""


class HolderState(StrEnum):
    """What a ticket holder is told: the `state` of a join or status answer (`views.py`; the
    OpenAPI document's `TicketState`, kept equal by a test). The closed set clients parse
    answers into (`simulator.client`): a new state is added here first."""

    PREQUEUE = "prequeue"
    WAITING = "waiting"
    CLOSING = "closing"
    """Waiting, but the wave closes or fills before this turn by the current estimate."""
    PAUSED = "paused"
    ADMITTED = "admitted"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CLOSED = "closed"


class JoinResult(IntEnum):
    NEW = 0
    EXISTING = 1
    """The registrant's own place, proven by its ticket or a verified enqueue token."""
    REJOINED = 2
    """The registrant's earlier place lapsed; a new one at the back."""
    HELD = 3
    """The registrant holds a live place, but this request did not prove it is the holder."""
    RL_IP = 4
    RL_REGISTRANT = 5
    SCHEDULED = 6
    CLOSED = 7
    FULL = 8


class WaveState(IntEnum):
    SCHEDULED = 0
    PREQUEUE = 1
    OPEN = 2
    PAUSED = 3
    FULL = 4
    CLOSED = 5


class SeenMark(StrEnum):
    """The first character of a ticket's `seen` value when it is no longer waiting. A waiting
    ticket's value is a number: the deadline of its next poll, in service milliseconds."""

    ADMITTED = "A"
    """Admitted at <ms>, not yet claimed: holds its slot until the holder's poll deadline."""
    CLAIMED = "S"
    """Admitted at <ms>, and the holder has been given its token: a session of session_ttl."""
    COMPLETED = "C"
    """Completed at <ms>: kept, so the registrant cannot queue again. A ticket that left, was
    abandoned or whose session expired has no state at all: it is reclaimed (lua/_lib.lua)."""
    # Call-backs (docs/callbacks.md): a holder who opted in may be away; no poll deadline
    # makes them abandoned. <d> is the last poll deadline promised (service ms; 0 = none):
    # a holder polling when the line reaches them is admitted at once, like anyone present.
    OPTED_IN = "O"
    """'O<d>': waiting, opted in to be called back, not told yet."""
    NOTIFIED = "N"
    """'N<w>:<d>': told their turn is near; the place is kept until at least <w> (service ms)."""
    CALLED = "K"
    """'K<w>': the line reached them while they were away: no slot, no quota, no outflow; kept
    until <w> (the `called` zset), then skipped as not returned."""
    RETURNED = "R"
    """'R<w>': came back after being called: admitted first at the next step (the `rt` list)."""


def _lua_table(name: str, members: dict[str, str]) -> str:
    body = ", ".join(f"{key} = {value}" for key, value in members.items())
    return f"local {name} = {{{body}}}"


def lua_prelude() -> str:
    """The tables above as Lua source, prepended to every script."""
    lines = ["-- generated from queue_service/protocol.py at load time: edit the Python"]
    for name, enum in (
        ("TICKET_STATE", TicketState),
        ("JOIN_RESULT", JoinResult),
        ("WAVE_STATE", WaveState),
    ):
        lines.append(_lua_table(name, {m.name.lower(): str(int(m)) for m in enum}))
        names = ", ".join(f"[{int(m)}] = '{m.name.lower()}'" for m in enum)
        lines.append(f"local {name}_NAME = {{{names}}}")
    lines.append(_lua_table("SEEN", {m.name.lower(): f"'{m.value}'" for m in SeenMark}))
    return "\n".join(lines) + "\n"


def _by_code(enum: type[IntEnum]) -> tuple[IntEnum, ...]:
    """The members indexed by their code: decoding a reply is an index, not an Enum call (a
    join batch decodes 64 codes; `Enum(value)` costs a lookup through the metaclass each)."""
    members = sorted(enum, key=int)
    if [int(m) for m in members] != list(range(len(members))):
        raise ValueError(f"{enum.__name__} codes must be 0..n-1")
    return tuple(members)


TICKET_STATES: tuple[TicketState, ...] = _by_code(TicketState)  # type: ignore[assignment]
JOIN_RESULTS: tuple[JoinResult, ...] = _by_code(JoinResult)  # type: ignore[assignment]
