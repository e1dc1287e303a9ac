"""Call-backs in the model (issue 24, docs/callbacks.md): people who leave the line to be
called back, and the queue's away / told / called / back states, by the service's rules.

- `opt_in` (at the join, after the person did not balk): `behaviour.opts_in` decides and
  picks the channel, `behaviour.callback_return_s` how long after the first message they come
  back (or never). They leave the page at once: no polls, no patience to run out. Their ticket
  keeps the deadline of the poll the join promised (lua/optin.lua keeps it as `O<d>`): reached
  before it, the queue cannot tell they left and admits them as anyone (a ghost admission:
  they take it up only if they are back before its slot lapses).
- `notify_step` (each tick of the admission loop, as `Callbacks.notify_step` runs each
  second): holders not told yet whose place is within `lead_s` of the cursor, at the pace
  estimate's seconds per place (lua/notify.lua), are told "your turn is near": a message, and
  their return window starts (`return_window_s`).
- `called` (the cursor reaches an away holder past their deadline, lua/admit.lua): no token,
  slot or quota; the window is the one they were told, and never less than half a window from
  now (a whole one if not told yet); a "turn" message.
- `came_back` (the link, `callback_return_s` after the first message): not reached yet, they
  wait on the page again and are admitted as anyone; called, they are admitted first
  (`ModelQueue.returned`); too late, the place is gone.
- `window_ended`: a called holder not back is skipped as abandoned (`not_returned`).
- carry-over (`notify.carry_over_to`, queue_service/carry_over.py): `carry_out` lists the
  holders still waiting who opted in when the wave closed or filled (those the line had called
  first, then the rest as the cursor would have reached them), each told by their channel;
  `carry_in` places them in the next wave's run, away and opted in, ahead of its newcomers or
  in its pre-queue (`ModelQueue.carried_ahead`, `prequeue_block`).

The counts (`totals`) are the run report's: people called back, back in time, the hours they
did not spend polling; messages by channel and bin (`TimeSeries.messages`).
"""

from __future__ import annotations

import heapq
import math
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from queue_service.notify_config import CONTACT_KINDS
from simulator import behaviour
from simulator.callback_params import CallbackParams
from simulator.model.agenda import CALLED_BACK_RETURN, WINDOW_ENDS
from simulator.model.queue import CALLED, FINISHED, IN_LINE, OFFERED
from simulator.model.recorder import ABANDONED, REJECTED, RUN_ENDED

if TYPE_CHECKING:
    from simulator.model.people import People

# The states of an opted-in holder (protocol.SeenMark: O, N, K, R), and after.
NOT_OPTED, AWAY, TOLD, CALLED_AWAY, BACK, OVER = range(6)
NEVER = -1.0


@dataclass(frozen=True)
class Carried:
    """A holder carried over to the next wave, with their own decisions."""

    channel: str
    back_after_s: float | None
    """After the first message there, comes back after this long (None: never)."""


class CallbackModel:
    def __init__(self, params: CallbackParams, people: People) -> None:
        self.params = params
        self.people = people
        self.queue = people.queue
        self.tickets = people.tickets
        self.window_s = params.return_window_s
        self.state = bytearray()
        self.channel = bytearray()
        self.opted_at = array("d")
        self.back_after = array("d")  # seconds after the first message; NEVER
        self.window_ends = array("d")
        self.away_until = array("d")  # back, or gave up (the time away ends there)
        self.pending: list[tuple[int, int]] = []
        """Away holders not told yet, a heap by place in admission order (the pre-queue's
        join it, ranked, at the first step after the draw; notify.lua's `cb` zset)."""
        self.unranked: list[int] = []
        self.opted_in = self.called_back = self.came_back = self.in_time = 0
        self.late = self.not_returned = self.admitted_away = self.carried_in = 0
        self.carried_out = 0
        self.away_s = 0.0  # counted at the end (`settle`)
        self.messages = dict.fromkeys(CONTACT_KINDS, 0)
        self.queue.on_called = self.called

    # ------------------------------------------------------------------ opting in

    def opt_in(self, t: float, ticket: int, kind: int, deadline: float) -> bool:
        """The person leaves the line to be called back, or not (False)."""
        people = self.people
        from simulator.model.people import KINDS

        channel = behaviour.opts_in(people.draws, KINDS[kind], self.params)
        if channel is None:
            return False
        back = behaviour.callback_return_s(people.draws, self.params)
        self._away(t, ticket, channel, back, deadline)
        self.opted_in += 1
        index = self.tickets.owner[ticket]
        o = people.record.sampled(index, ticket)
        if o is not None:
            o.callback_channel, o.opted_in_t = channel, t
        if back is None:  # they leave for good: whatever the queue does, nobody comes back
            people.give_up(index, ticket, t, ABANDONED)
        return True

    def carry_in(self, t: float, ticket: int, holder: Carried) -> None:
        """A holder carried over from the previous wave: opted in, away, no poll deadline."""
        self._away(t, ticket, holder.channel, holder.back_after_s, -math.inf)
        self.carried_in += 1

    def carry_out(self, t: float) -> list[Carried]:
        """The holders still waiting who opted in, as the carry-over moves them: those called
        first (in the order the line called them), then the rest in line order; each is told
        (a message by their channel)."""
        tk, position = self.tickets, self.tickets.position
        called, waiting = [], []
        for ticket, state in enumerate(self.state):
            if state in (NOT_OPTED, OVER):
                continue
            if tk.state[ticket] == CALLED:
                called.append(ticket)
            elif tk.state[ticket] == IN_LINE:
                waiting.append(ticket)
        called.sort(key=position.__getitem__)
        waiting.sort(key=lambda ticket: (position[ticket] < 0, position[ticket]))
        carried = []
        for ticket in called + waiting:
            back = self.back_after[ticket]
            carried.append(
                Carried(CONTACT_KINDS[self.channel[ticket]], None if back == NEVER else back)
            )
            self._message(t, ticket)
        self.carried_out = len(carried)
        return carried

    def _away(
        self, t: float, ticket: int, channel: str, back: float | None, deadline: float
    ) -> None:
        grow = len(self.tickets) - len(self.state)
        if grow > 0:
            self.state.extend(bytes(grow))
            self.channel.extend(bytes(grow))
            self.opted_at.extend([0.0] * grow)
            self.back_after.extend([NEVER] * grow)
            self.window_ends.extend([0.0] * grow)
            self.away_until.extend([math.inf] * grow)
        self.state[ticket] = AWAY
        self.channel[ticket] = CONTACT_KINDS.index(channel)
        self.opted_at[ticket] = t
        self.back_after[ticket] = NEVER if back is None else back
        self.tickets.away[ticket] = 1
        self.queue.promise(ticket, deadline)
        if self.queue.opened:
            heapq.heappush(self.pending, (self.tickets.position[ticket], ticket))
        else:
            self.unranked.append(ticket)

    # ------------------------------------------------------------------ the queue's side

    def notify_step(self, t: float, seconds_per_place: float) -> None:
        q = self.queue
        if not q.opened or q.full or t >= q.closes:
            return
        pending, position, state = self.pending, self.tickets.position, self.state
        for ticket in self.unranked:
            heapq.heappush(pending, (position[ticket], ticket))
        self.unranked.clear()
        places = math.ceil(self.params.lead_s / max(seconds_per_place, 1e-6))
        near = q.line_base + q.head + places
        while pending and pending[0][0] < near:
            _, ticket = heapq.heappop(pending)
            if state[ticket] == AWAY and self.tickets.state[ticket] == IN_LINE:
                state[ticket] = TOLD
                self.window_ends[ticket] = t + self.window_s
                self._message(t, ticket)
                self._first_message(t, ticket)

    def called(self, t: float, ticket: int) -> None:
        """The cursor reached an away holder past their deadline: no token, slot or quota."""
        state = self.state[ticket]
        if state == TOLD:
            window = max(self.window_ends[ticket], t + self.window_s / 2)
        else:
            window = t + self.window_s
            self._first_message(t, ticket)
        self.state[ticket] = CALLED_AWAY
        self.window_ends[ticket] = window
        self._message(t, ticket)
        self.people.agenda.push((window, WINDOW_ENDS, ticket, 0))
        o = self.people.record.sampled(self.tickets.owner[ticket], ticket)
        if o is not None:
            o.reached_t = o.called_t = t

    def admitted_while_away(self, t: float, ticket: int) -> None:
        """Reached before the deadline of the poll their join promised: admitted as anyone,
        a ghost admission unless they are back before its slot lapses."""
        self.admitted_away += 1
        if self.state[ticket] == AWAY:  # never told: admitted, nobody calls them any more
            self.state[ticket] = OVER
            if self.back_after[ticket] != NEVER:
                self.away_until[ticket] = t
                self.people.give_up(self.tickets.owner[ticket], ticket, t, ABANDONED)

    def _message(self, t: float, ticket: int) -> None:
        channel = CONTACT_KINDS[self.channel[ticket]]
        self.messages[channel] += 1
        series = self.people.record.series
        counts = series.messages.get(channel)
        if counts is None:
            counts = series.messages[channel] = [0] * len(series)
        counts[series.bin(t)] += 1

    def _first_message(self, t: float, ticket: int) -> None:
        self.called_back += 1
        o = self.people.record.sampled(self.tickets.owner[ticket], ticket)
        if o is not None:
            o.notified_t = t
        back = self.back_after[ticket]
        if back != NEVER:
            self.people.agenda.push((t + back, CALLED_BACK_RETURN, ticket, 0))

    # ------------------------------------------------------------------ the person's side

    def on_came_back(self, t: float, ticket: int, _: int = 0) -> None:
        """Back by the return link."""
        people, tk, q = self.people, self.tickets, self.queue
        state, index = self.state[ticket], tk.owner[ticket]
        o = people.record.sampled(index, ticket)
        if o is not None:
            o.returned_t = t
        self.came_back += 1
        self.away_until[ticket] = t
        if state in (AWAY, TOLD, CALLED_AWAY) and (q.full or t >= q.closes):
            self.state[ticket] = OVER  # the link says the wave closed or filled
            people.give_up(index, ticket, t, REJECTED)
            return
        if state in (AWAY, TOLD, CALLED_AWAY) and tk.state[ticket] in (IN_LINE, CALLED):
            self.in_time += 1
            self.state[ticket] = BACK
            tk.away[ticket] = 0
            if o is not None:
                o.returned_in_time = True
            if tk.state[ticket] == CALLED:
                q.returned.append(ticket)
            else:
                q.promise(ticket, math.inf)  # polling again: admitted as anyone when reached
            people.present[tk.kind[ticket]] += 1
            return
        if tk.state[ticket] == OFFERED and tk.slot_until[ticket] > t:
            # admitted while away, and back before the slot lapsed: their poll takes it up
            self.in_time += 1
            if o is not None:
                o.returned_in_time = True
            people.on_noticed(t, ticket)
            return
        self.late += 1
        if o is not None:
            o.returned_in_time = False
        if state != OVER:
            people.give_up(index, ticket, t, ABANDONED)

    def on_window_ended(self, t: float, ticket: int, _: int = 0) -> None:
        """A called holder not back: skipped as abandoned (the ledger's not_returned)."""
        if self.state[ticket] != CALLED_AWAY:
            return
        self.state[ticket] = OVER
        self.tickets.state[ticket] = FINISHED
        self.queue.abandoned += 1
        self.not_returned += 1
        if self.back_after[ticket] != NEVER:  # they meant to come back: too late
            self.away_until[ticket] = t
            self.people.give_up(self.tickets.owner[ticket], ticket, t, ABANDONED)

    def settle(self, end: float, closed: bool) -> None:
        """Away at the end of the run: the time away counts; called ones get their fate."""
        fate = REJECTED if closed else RUN_ENDED
        tk = self.tickets
        for ticket, state in enumerate(self.state):
            waiting = tk.state[ticket] in (IN_LINE, CALLED)
            if state == OVER:
                waiting = False
            if state != NOT_OPTED and self.back_after[ticket] != NEVER:
                self.away_s += max(0.0, min(self.away_until[ticket], end) - self.opted_at[ticket])
            if state in (AWAY, TOLD, CALLED_AWAY) and self.back_after[ticket] != NEVER:
                if waiting:
                    self.people.give_up(tk.owner[ticket], ticket, end, fate)
            elif state == BACK and tk.state[ticket] == CALLED:  # back, never admitted
                self.people.give_up(tk.owner[ticket], ticket, end, fate)

    def totals(self) -> dict[str, Any]:
        return {
            "opted_in": self.opted_in,
            "called_back": self.called_back,
            "came_back": self.came_back,
            "came_back_in_time": self.in_time,
            "came_back_late": self.late,
            "not_returned": self.not_returned,
            "admitted_while_away": self.admitted_away,
            "away_hours": round(self.away_s / 3600.0, 3),
            "carried_in": self.carried_in,
            "carried_out": self.carried_out,
            "messages": {k: v for k, v in self.messages.items() if v},
        }
