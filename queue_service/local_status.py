"""Status of a waiting ticket answered from the process's own copy of the wave, without a
Redis round trip.

Every process's admission loop fetches the wave's counts every admission interval (the cursor,
the number of tickets issued, the pre-queue size, the incarnation, who left). A ticket that
the cursor has not reached yet is waiting, and its place is its order minus the cursor: that
needs nothing else from Redis. Everything else goes to Redis (lua/status.lua):

- a ticket the cursor has reached (admitted, abandoned, completed, expired: Redis knows which),
- a ticket newer than this copy, or of an incarnation this copy does not know, or of one
  that ended in a rollback in place (its number may have been handed out twice: only Redis
  can tell the two holders apart, by the ticket's stamp),
- a pre-queue ticket whose rank this process has not learnt yet (learnt once, then cached),
- a ticket this process has seen leave (its left list), or any ticket of a wave that is not
  open, paused or in pre-queue, or when the copy is older than `max_age_s`.

Correctness, by construction:
- never a better place than the real one: the copy's cursor is at most one admission step old
  and the cursor only moves forward, so the position shown is never below the true one;
- an admitted ticket is told within one admission interval: once this process's copy shows the
  cursor past it, its next poll goes to Redis and gets its token;
- a left ticket is never shown as waiting: the process that handled the leave answers it from
  Redis at once, every other process within one admission step (the left list).

Across processes of one deployment the copies differ by at most one admission step, so a
holder whose polls land on different processes may see the position move back by the
admissions of one step (at most admit_rate x admission_interval); within a process it only
goes down.
"""

from __future__ import annotations

from typing import NamedTuple

from queue_service.protocol import TicketState
from queue_service.registry import WaveRuntime
from queue_service.tickets import Ticket

LOCAL_WAVE_STATES = frozenset({"open", "paused", "prequeue"})


class LocalAnswer(NamedTuple):
    state: TicketState
    """WAITING or PREQUEUE."""
    ahead: int
    """Tickets ahead in admission order (-1 in the pre-queue)."""


def answer_locally(
    runtime: WaveRuntime, ticket: Ticket, now: float, max_age_s: float
) -> LocalAnswer | None:
    """The ticket's state from the process's copy, or None when only Redis can tell."""
    counts = runtime.counts
    seq = ticket.seq
    if (
        counts is None
        or now - runtime.counts_at > max_age_s
        or counts.state not in LOCAL_WAVE_STATES
        or not counts.issued_here(ticket.incarnation, seq)
        or ticket.incarnation in counts.rolled_back
        or seq in runtime.left
    ):
        return None
    if counts.open_seq < 0:
        return LocalAnswer(TicketState.PREQUEUE, -1)
    order = seq - 1 if seq > counts.open_seq else runtime.ranks.get(seq)
    if order is None or order < runtime.cursor:
        return None
    return LocalAnswer(TicketState.WAITING, order - runtime.cursor)
