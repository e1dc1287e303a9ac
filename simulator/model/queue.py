"""The queue as the service keeps it, on virtual time: tickets in admission order, the cursor,
the token bucket, the slots and the counters, changed as `lua/join.lua`, `lua/admit.lua` and
`lua/status.lua` change them. The rules themselves are `queue_service.admission_policy`'s.

- `place(t, owner, kind, patience)`: a new ticket (join.lua): into the pre-queue block before
  the opening, at the back of the line after it;
- `held_place(t, old)`: the place a join with the old ticket as proof hands back, if any;
- `open()`: the pre-queue block, shuffled, goes first (lua/_lib.lua open_if_due);
- `next_admission_at(now)`, `admit_one(t)`: admission (admit.lua): a token bucket at
  `admit_rate` holding at most the burst, while slots are free and the quota lasts; the cursor
  skips tickets whose holder is gone past their deadline (`skip_at`), at no cost;
- `limits`: what admission is held to, replaceable between events (`set_limits`): a controller
  (an autopilot) may change them as the service's admin API would;
- `counts()`: the counters as admit.lua returns them;
- call-backs (lua/admit.lua): a ticket whose holder opted in and is away (`Tickets.away`,
  their last poll deadline passed) is called when the cursor reaches it: no token, no slot,
  no quota (`on_called`); one whose holder came back is in `returned`, admitted first.

Tickets live in compact parallel arrays (`Tickets`) indexed by ticket number (seq - 1): the
queue's own columns and what the model knows of each holder, so millions fit.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from queue_service import admission_policy as policy

INF = math.inf
UNLIMITED = 2**62

# What a ticket is, for the model (its own phases, not the service's reply codes):
IN_LINE = 0  # waiting (or in the pre-queue block), not reached by the cursor
OFFERED = 1  # admitted: holds a slot until its holder's poll claims it (SeenMark.ADMITTED)
CLAIMED = 2  # its holder took the admission up: a session (SeenMark.CLAIMED)
DROPPED = 3  # the holder closed the tab mid-flow: the slot waits for the session's TTL
FINISHED = 4  # passed by the cursor without admission, or its slot freed
CALLED = 5  # reached while its holder was away after opting in (SeenMark.CALLED): no slot

# How a slot was freed.
REGISTERED, ENDED, LAPSED = range(3)


@dataclass(frozen=True)
class Limits:
    """What admission is held to (the wave's settings; the planner's trial; a controller's)."""

    admit_rate: float
    burst: float
    max_active: int
    """UNLIMITED for none."""
    quota: int
    """UNLIMITED for none."""

    @classmethod
    def of(cls, wave_admit_rate: float, wave_burst: float, max_active: int, quota: int) -> Limits:
        """From wave settings, where 0 means no limit."""
        if wave_admit_rate <= 0:
            raise ValueError("admit_rate must be > 0")
        return cls(
            wave_admit_rate,
            wave_burst,
            max_active if max_active > 0 else UNLIMITED,
            quota if quota > 0 else UNLIMITED,
        )

    @property
    def configured_max_active(self) -> int:
        """max_active as the service configures it (0: no limit)."""
        return 0 if self.max_active == UNLIMITED else self.max_active

    @property
    def configured_quota(self) -> int:
        return 0 if self.quota == UNLIMITED else self.quota


class Tickets:
    """Every ticket issued, in compact parallel arrays indexed by its number (seq - 1)."""

    def __init__(self) -> None:
        # the queue's
        self.state = bytearray()
        self.prequeue = bytearray()
        self.position = array("q")  # place in admission order (-1 while in the pre-queue)
        self.skip_at = array("d")  # the cursor skips it from then on (INF while polled)
        self.admitted_at = array("d")
        self.slot_until = array("d")  # when its slot is freed (the event that counts)
        self.left = bytearray()  # its holder gave the place up (leave): skipped, not abandoned
        # the holder's
        self.owner = array("q")  # registrant index
        self.kind = bytearray()  # how they poll (simulator.model.people)
        self.patience = array("d")
        self.gone_at = array("d")  # its holder stopped polling (INF while present)
        self.balked = bytearray()  # its holder left at once, on seeing the ETA
        self.may_return = bytearray()  # its holder has not come back yet (people do once)
        self.superseded = bytearray()  # its holder came back and took a new ticket
        self.away = bytearray()  # its holder opted in to call-backs and left the page

    def __len__(self) -> int:
        return len(self.owner)

    def issue(self, owner: int, kind: int, patience: float, prequeue: bool) -> int:
        self.state.append(IN_LINE)
        self.prequeue.append(prequeue)
        self.position.append(-1)
        self.skip_at.append(INF)
        self.admitted_at.append(INF)
        self.slot_until.append(INF)
        self.left.append(0)
        self.owner.append(owner)
        self.kind.append(kind)
        self.patience.append(patience)
        self.gone_at.append(INF)
        self.balked.append(0)
        self.may_return.append(1)
        self.superseded.append(0)
        self.away.append(0)
        return len(self.owner) - 1


PassedFn = Callable[[float, int, bool], None]
"""(time, ticket, skipped): the cursor passed a ticket, admitting it or skipping it."""
CalledFn = Callable[[float, int], None]
"""(time, ticket): the cursor reached a ticket whose holder is away: called, not admitted."""


class ModelQueue:
    def __init__(
        self,
        limits: Limits,
        *,
        opens: float,
        closes: float,
        session_ttl_s: float,
        rng: random.Random,
    ) -> None:
        self.limits = limits
        self.opens, self.closes = opens, closes
        self.session_ttl_s = session_ttl_s
        self.rng = rng  # the opening's shuffle
        self.tickets = Tickets()
        self.line = array("q")  # tickets in admission order from `line_base` on
        self.line_base = 0
        self.head = 0  # the cursor, as an index into `line`
        self.prequeue_block: list[int] = []
        self.carried_ahead: list[int] = []
        """Holders carried over from the previous wave with order 'ahead': first at the draw,
        in their order there (draw.py)."""
        self.prequeue_spread_s = 1.0
        self.opened = False
        self.full = False
        self.tokens, self.tokens_at = limits.burst, opens  # the bucket starts full
        self.active = 0
        # the counters of the service (WaveCounts)
        self.admitted = self.abandoned = self.ended = self.lapsed = 0
        self.on_passed: PassedFn = lambda t, ticket, skipped: None
        self.on_called: CalledFn = lambda t, ticket: None
        self.returned: deque[int] = deque()
        """Called holders who came back: admitted first (admit.lua's `rt` list)."""

    # ------------------------------------------------------------------ joins

    def place(self, t: float, owner: int, kind: int, patience: float) -> int:
        """A new ticket (join.lua): the pre-queue block before the opening, else the back."""
        in_pre = t < self.opens
        ticket = self.tickets.issue(owner, kind, patience, in_pre)
        if in_pre:
            self.prequeue_block.append(ticket)
        else:
            self.tickets.position[ticket] = self.line_base + len(self.line)
            self.line.append(ticket)
        return ticket

    def held_place(self, t: float, old: int) -> int:
        """The old ticket, if a join with it as proof hands its place back; else -1."""
        tk = self.tickets
        state = tk.state[old]
        if state == IN_LINE and (not tk.left[old] or tk.gone_at[old] == INF):
            return old  # not reached yet, and no `leave` marked it: the place holds
        if state == OFFERED and tk.slot_until[old] > t:
            return old
        return -1

    def promise(self, ticket: int, deadline: float) -> None:
        """The holder's last poll deadline: the cursor skips the ticket after it (as
        abandoned), and admits it until then. INF: the holder keeps polling."""
        self.tickets.skip_at[ticket] = deadline
        self.tickets.left[ticket] = 0

    def leave(self, at: float, ticket: int) -> None:
        """The holder gives the place up at `at` (leave.lua): skipped from then on, for free,
        and not counted abandoned."""
        self.tickets.skip_at[ticket] = at
        self.tickets.left[ticket] = 1

    def ahead(self, ticket: int) -> int:
        """Tickets the cursor has not reached ahead of this one (ghosts included)."""
        return self.tickets.position[ticket] - self.line_base - self.head

    @property
    def waiting(self) -> int:
        return len(self.line) - self.head if self.opened else 0

    @property
    def skipped(self) -> int:
        """Tickets passed by the cursor without admission (abandoned or left)."""
        return self.line_base + self.head - self.admitted

    # ------------------------------------------------------------------ admission

    def open(self) -> None:
        """The pre-queue block, shuffled, goes first (lua/_lib.lua open_if_due)."""
        self.opened = True
        block = self.prequeue_block
        self.rng.shuffle(block)
        self.prequeue_spread_s = policy.prequeue_spread_s(len(block))
        position = self.tickets.position
        for ticket in [*self.carried_ahead, *block]:
            position[ticket] = self.line_base + len(self.line)
            self.line.append(ticket)
        block.clear()
        self.carried_ahead.clear()

    def set_limits(self, t: float, limits: Limits) -> None:
        """New settings from `t` on: the bucket is counted up to now at the old rate first."""
        old = self.limits
        if t > self.tokens_at and self.opened:
            self.tokens = policy.refill(self.tokens, t - self.tokens_at, old.admit_rate, old.burst)
            self.tokens_at = t
        self.tokens = min(self.tokens, limits.burst)
        self.limits = limits
        self.full = self.admitted >= limits.quota

    def next_admission_at(self, now: float) -> float:
        """The earliest time the next admission step can admit anyone."""
        lim = self.limits
        if not self.opened:
            return self.opens
        nobody = self.head >= len(self.line) and not self.returned
        if self.full or nobody or self.active >= lim.max_active:
            return INF
        t = now
        if self.tokens < 1.0:
            t = max(t, policy.first_token_at(self.tokens, self.tokens_at, lim.admit_rate))
        return t if t < self.closes else INF

    def admit_one(self, t: float) -> int:
        """The cursor moves past skipped tickets to the next live one and admits it; the
        ticket admitted, or -1 when the line ran out."""
        lim, tk, line = self.limits, self.tickets, self.line
        self.tokens = policy.refill(self.tokens, t - self.tokens_at, lim.admit_rate, lim.burst)
        self.tokens_at = t
        admitted = -1
        passed = self.on_passed
        if self.returned:  # called holders who came back go first, within the same limits
            ticket = self.returned.popleft()
            self._admit(t, ticket)
            passed(t, ticket, False)
            return ticket
        away = tk.away
        while self.head < len(line):
            ticket = line[self.head]
            self.head += 1
            if away[ticket] and tk.skip_at[ticket] < t:
                # opted in and gone past the deadline of their last poll: called, no token
                tk.state[ticket] = CALLED
                self.on_called(t, ticket)
                continue
            if tk.skip_at[ticket] <= t:
                tk.state[ticket] = FINISHED
                self.abandoned += 1 - tk.left[ticket]  # a missed deadline, not a leave
                passed(t, ticket, True)
                continue
            self._admit(t, ticket)
            passed(t, ticket, False)
            admitted = ticket
            break
        if self.head > 1_000_000 and self.head * 2 > len(line):
            # Drop the consumed prefix so memory follows the live line, not the wave.
            del line[: self.head]
            self.line_base += self.head
            self.head = 0
        return admitted

    def _admit(self, t: float, ticket: int) -> None:
        self.tokens -= 1.0
        self.admitted += 1
        self.active += 1
        self.tickets.state[ticket] = OFFERED
        self.tickets.admitted_at[ticket] = t
        if self.admitted >= self.limits.quota:
            self.full = True

    def claim_window(self, t: float, ticket: int) -> float:
        """Until when an admission made at `t` holds its slot unclaimed: its holder's
        deadline, at most a session (the model's clock is the service's: no outage)."""
        return policy.claim_until(t, self.tickets.skip_at[ticket], t, self.session_ttl_s)

    # ------------------------------------------------------------------ slots

    def free_slot(self, ticket: int) -> int:
        """A slot is freed (a session completed or expired, an admission lapsed): the
        ticket's state before."""
        tk = self.tickets
        tk.slot_until[ticket] = -INF
        self.active -= 1
        self.ended += 1  # the queue counts it completed (complete) or expired (lapsed)
        state = tk.state[ticket]
        if state == OFFERED:
            self.lapsed += 1  # never taken up
        tk.state[ticket] = FINISHED
        return state
