"""The registrants of a model run: one handler per event in a person's journey, on virtual
time, with the live driver's decisions (`simulator.behaviour`, drawn with the model's fast
`Draws`) and the service's answers (`ModelQueue`, `queue_service.pacing`).

- an arrival (`on_arrival`) or a return (`on_came_back`) joins (`join`), answered as join.lua
  answers it: a new place at the back, or the old one handed back while it holds; the ETA
  told then (`pacing.eta_s`) is what a person balks at (`behaviour.balks`);
- patience (`behaviour.patience_from`: the latest join, or the opening for the pre-queue) runs
  out at a poll (`behaviour.poll_delay_s`): the person leaves, saying so or silently
  (`behaviour.abandons_silently`; a silent ticket stays live until the deadline of its last
  poll, `admission_policy.poll_deadline`), and may come back once (`behaviour.returns_later_s`);
- the cursor reaching a ticket (`passed`): a ghost's admission holds its slot until its
  deadline; a present holder notices at their next poll (`on_noticed`, the time to it from
  `behaviour.poll_gaps`), claims it and runs the flow (the origin's `session_s`), some drop
  out (`behaviour.drops_out_in_flow`), the under-age are refused at the KTP step;
- a slot freed (`on_slot_freed`): registered, ended, or lapsed.

Each person is decided at their join for the rest of their wait (when patience runs out, their
last poll), so millions cost one handler call each plus a timer; if admission reaches them
first, the plan is cancelled (`_cancel_leaving`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from queue_service import admission_policy, pacing
from queue_service.protocol import HolderState
from simulator import behaviour
from simulator.model.agenda import CAME_BACK, FLOW_ENDED, NOTICED, SLOT_FREED, Agenda
from simulator.model.callbacks import CallbackModel
from simulator.model.draws import Draws
from simulator.model.origin import OriginModel
from simulator.model.paced_flows import PacedFlows
from simulator.model.queue import (
    CLAIMED,
    DROPPED,
    ENDED,
    IN_LINE,
    INF,
    LAPSED,
    OFFERED,
    REGISTERED,
    ModelQueue,
)
from simulator.model.recorder import (
    ABANDONED,
    BALKED,
    ERRORS,
    REGISTERED_FATE,
    REJECTED,
    RENEGED,
    RUN_ENDED,
    Recorder,
)
from simulator.records import RegistrantOutcome
from simulator.scenario import Scenario

# Kinds of holder: how they poll.
AUTO, MANUAL, BOT = range(3)


@dataclass(frozen=True, slots=True)
class Kind:
    """The traits behaviour reads, for one kind of holder (`behaviour.Traits`); patience is
    drawn per person and kept with the ticket."""

    is_bot: bool
    manual_refresher: bool
    retry_habit: str = "human"
    patience_s: float = math.inf
    tabs: int = 1


KINDS = (Kind(False, False), Kind(False, True), Kind(True, False, "full_jitter"))


class Departures:
    """People who will stop polling, by tick: the present-holder counts (for the polling
    load) and the queue's `left` counter follow them as the ticks pass."""

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self.applied = -1  # ticks up to this one are counted in
        self.by_tick: dict[int, list[int]] = {}  # tick -> [auto, manual, bot, leaves]
        self.present = [0, 0, 0]
        self.left = 0

    def add(self, t: float, kind: int, leaves: int, sign: int = 1) -> None:
        tick = int(t // self.tick_s)
        if tick <= self.applied:
            self.present[kind] -= sign
            self.left += sign * leaves
            return
        row = self.by_tick.get(tick)
        if row is None:
            row = self.by_tick[tick] = [0, 0, 0, 0]
        row[kind] += sign
        row[3] += sign * leaves

    def cancel(self, t: float, kind: int, leaves: int) -> None:
        self.add(t, kind, leaves, -1)

    def apply(self, tick: int) -> None:
        self.applied = tick
        row = self.by_tick.pop(tick, None)
        if row is not None:
            for kind in (AUTO, MANUAL, BOT):
                self.present[kind] -= row[kind]
            self.left += row[3]


class People:
    """The registrants' event handlers; the counts of what people did."""

    def __init__(
        self,
        scenario: Scenario,
        queue: ModelQueue,
        agenda: Agenda,
        draws: Draws,
        record: Recorder,
        origin: OriginModel,
        pace: pacing.PaceEstimate,
    ) -> None:
        self.queue, self.agenda, self.draws, self.record, self.origin = (
            queue, agenda, draws, record, origin,
        )  # fmt: skip
        self.pace = pace
        self.seconds_per_place = pace.seconds_per_place
        self.mix, self.beh = scenario.population_mix, scenario.behaviour
        self.tickets = queue.tickets
        self.rnd = draws.random
        self.duration = scenario.clock.duration_s
        self.opens, self.closes = queue.opens, queue.closes
        self.pre_start = self.opens - scenario.wave.prequeue_s
        self.grace = scenario.wave.abandon_after_s
        self.bot_share = self.mix.bot_share + self.mix.joki_share
        self.departures = Departures(agenda.tick_s)
        self.present = self.departures.present  # present holders by kind, not yet reached
        self.inflow = 0  # sessions in the registration flow
        self.paced = PacedFlows(origin.requests_per_flow) if origin.paced else None
        """Flows that follow the origin's pace (an origin whose load slows them)."""
        self.registered = self.arrived = self.joins = self.prequeue_joins = self.taken_up = 0
        low, high, scale = behaviour.poll_gaps(KINDS[AUTO], pacing.MIN_POLL_MS, self.beh)
        self.jitter = low, high
        self.notice_gaps = [
            (low * scale, high * scale),
            *(behaviour.poll_gaps(KINDS[kind], None, self.beh)[:2] for kind in (MANUAL, BOT)),
        ]
        queue.on_passed = self.passed
        self.callbacks = CallbackModel(scenario.callbacks, self)

    def give_up(self, index: int, ticket: int, t: float, fate: int) -> None:
        """A person stops (for now): their fate, unless a newer ticket of theirs decides it."""
        if ticket >= 0 and self.tickets.superseded[ticket]:
            return
        self.record.give_up(index, t, fate)

    # ------------------------------------------------------------------ arrivals and joins

    def on_arrival(self, t: float, index: int) -> None:
        self.arrived += 1
        rec = self.record
        k = int(t // rec.step)
        rec.series.arrivals[k if k < rec.bins else rec.bins - 1] += 1
        rnd, mix = self.rnd, self.mix
        kind = (
            BOT if rnd() < self.bot_share else MANUAL if rnd() < mix.manual_refresh_share else AUTO
        )
        patience = self.draws.lognormal(mix.patience_median_s, mix.patience_sigma)
        if index % rec.every == 0:
            rec.outcomes[index] = RegistrantOutcome(index=index, is_bot=kind == BOT, arrival_t=t)
        # before the pre-queue opens, people are told to come back then
        self.join(max(t, self.pre_start), index, kind, patience, -1)

    def on_came_back(self, t: float, old: int, _: int = 0) -> None:
        tk = self.tickets  # a return is not a first attempt: no arrival counted
        if tk.gone_at[old] == INF:
            return  # admission reached them before they went: nobody left, nobody returns
        tk.may_return[old] = 0
        self.join(t, tk.owner[old], tk.kind[old], tk.patience[old], old)

    def join(self, t: float, index: int, kind: int, patience: float, old: int) -> None:
        """POST join, answered as join.lua answers it, then the person's first decision."""
        q, tk, rec = self.queue, self.tickets, self.record
        k = int(t // rec.step)
        rec.joins[k if k < rec.bins else rec.bins - 1] += 1
        if t >= self.closes or q.full:
            self.give_up(index, -1, t, REJECTED)  # 409 wave_closed / wave_full
            return
        ticket = q.held_place(t, old) if old >= 0 else -1
        if ticket >= 0 and tk.state[ticket] == OFFERED:
            self._cancel_leaving(ticket)
            self._record_join(t, index, ticket, None)
            self.on_noticed(t, ticket)  # the answer carries the token: claimed now
            return
        if ticket < 0:
            if old >= 0:
                tk.superseded[old] = 1
            if t < self.opens:
                self.prequeue_joins += 1
            ticket = q.place(t, index, kind, patience)
            if old >= 0:
                tk.may_return[ticket] = 0
        else:
            self._cancel_leaving(ticket)  # present again, at the same place
        self.joins += 1
        self.present[kind] += 1
        eta = None
        if q.opened:
            eta = pacing.eta_s(q.ahead(ticket), self.seconds_per_place)
        if index % rec.every == 0:
            self._record_join(t, index, ticket, eta)
        if kind == BOT:
            return  # scripts neither balk nor lose patience (behaviour.balks, reneges)
        if behaviour.balks(self.draws, KINDS[kind], HolderState.WAITING, eta, self.beh):
            assert eta is not None
            self._plan_leaving(ticket, t, t, pacing.poll_after_ms(eta) / 1000)
            tk.balked[ticket] = 1
            self.give_up(index, ticket, t, BALKED)
            return
        if self.callbacks.params.enabled and self._opts_in(t, ticket, kind, eta):
            return
        self._plan_patience(t, ticket, patience, eta)

    def _opts_in(self, t: float, ticket: int, kind: int, eta: float | None) -> bool:
        """Leaves the page to be called back (the join carried a contact); the ticket keeps
        the deadline of the poll the join's answer asked for."""
        if self.queue.opened:
            told_ms = pacing.poll_after_ms(eta or 0.0)
        else:
            size = len(self.queue.prequeue_block)
            told_ms = pacing.prequeue_poll_after_ms(self.opens - t, size, 0.5)
        deadline = admission_policy.poll_deadline(t, told_ms / 1000, self.grace)
        if not self.callbacks.opt_in(t, ticket, kind, deadline):
            return False
        self.present[kind] -= 1  # gone from the page: no polls
        return True

    def _record_join(self, t: float, index: int, ticket: int, eta: float | None) -> None:
        rec = self.record
        o = rec.outcomes.get(index)
        if o is None:
            return
        o.gave_up_t = o.gave_up_reason = None
        if rec.current.get(index) == ticket:
            return  # the same place handed back: it was taken at the first join
        rec.current[index] = ticket
        o.joined_t, o.prequeue = t, not self.queue.opened
        o.position_at_join = None if eta is None else self.queue.ahead(ticket) + 1
        o.eta_at_join_s = eta
        o.reached_t = None

    # ------------------------------------------------------------------ leaving

    def _plan_patience(self, t: float, ticket: int, patience: float, eta: float | None) -> None:
        """Decided at join, as the person's traits decide it: when patience runs out they
        leave at their next poll. The poll interval then is the one the service tells at that
        place, predicted by the ETA itself (the wait left then); if admission reaches them
        first, none of it happens (`_cancel_leaving`)."""
        start = behaviour.patience_from(t, self.opens)
        out = start + patience
        if out >= self.duration:
            return
        left_then = (eta if eta is not None else 0.0) - (out - start)
        told_ms = pacing.poll_after_ms(max(0.0, left_then))
        tk = self.tickets
        gap = behaviour.poll_delay_s(self.draws, KINDS[tk.kind[ticket]], told_ms, self.beh)
        gone = out + self.rnd() * gap
        self._plan_leaving(ticket, gone, gone - gap, told_ms / 1000)
        if tk.may_return[ticket]:
            later = behaviour.returns_later_s(self.draws, self.beh)
            if later is not None and gone + later < self.closes:
                self.agenda.push((gone + later, CAME_BACK, ticket, 0))

    def _plan_leaving(self, ticket: int, gone: float, last_poll: float, told_s: float) -> None:
        """Leave (POST leave: skipped from then on) or go silently (live until the deadline
        of the last poll)."""
        tk = self.tickets
        tk.gone_at[ticket] = gone
        if behaviour.abandons_silently(self.draws, self.beh):
            deadline = admission_policy.poll_deadline(last_poll, told_s, self.grace)
            self.queue.promise(ticket, max(gone, deadline))
        else:
            self.queue.leave(gone, ticket)
        self.departures.add(gone, tk.kind[ticket], tk.left[ticket])

    def _cancel_leaving(self, ticket: int) -> None:
        tk = self.tickets
        if tk.gone_at[ticket] < INF:
            self.departures.cancel(tk.gone_at[ticket], tk.kind[ticket], tk.left[ticket])
        tk.gone_at[ticket] = tk.skip_at[ticket] = INF

    # ------------------------------------------------------------------ admission

    def passed(self, t: float, ticket: int, skipped: bool) -> None:
        """The cursor reached `ticket`: skipped (its holder gone past the deadline), or
        admitted, for a ghost (gone before) or for a holder who notices at the next poll."""
        tk, rec = self.tickets, self.record
        index = tk.owner[ticket]
        if index % rec.every == 0 and rec.current.get(index) == ticket:
            rec.outcomes[index].reached_t = t
        if skipped:
            if not tk.balked[ticket]:
                self.give_up(index, ticket, tk.gone_at[ticket], RENEGED)
            return
        k = int(t // rec.step)
        rec.series.admissions[k if k < rec.bins else rec.bins - 1] += 1
        if tk.away[ticket]:  # opted in and away, before their deadline: the queue cannot tell
            self._schedule_free(ticket, self.queue.claim_window(t, ticket), LAPSED)
            self.callbacks.admitted_while_away(t, ticket)
            return
        if tk.gone_at[ticket] <= t:  # a ghost: the slot waits for the holder's deadline
            self._schedule_free(ticket, self.queue.claim_window(t, ticket), LAPSED)
            if not tk.balked[ticket]:
                self.give_up(index, ticket, tk.gone_at[ticket], RENEGED)
            return
        self._cancel_leaving(ticket)  # they notice at their next poll, long before
        kind = tk.kind[ticket]
        self.present[kind] -= 1
        notice = t + self.draws.residual(*self.notice_gaps[kind])
        if tk.prequeue[ticket] and kind == AUTO:
            notice = max(notice, self._first_poll_after_opening())
        tk.slot_until[ticket] = INF
        self.agenda.push((notice, NOTICED, ticket, 0))

    def _first_poll_after_opening(self) -> float:
        """Pre-queue holders were told to come back at a random point of a window just after
        the opening (`pacing.prequeue_poll_after_ms`)."""
        told = 1.0 + self.rnd() * self.queue.prequeue_spread_s
        return self.opens + told * self.draws.uniform(*self.jitter)

    def _schedule_free(self, ticket: int, at: float, how: int) -> None:
        self.tickets.slot_until[ticket] = at
        self.agenda.push((at, SLOT_FREED, ticket, how))

    # ------------------------------------------------------------------ sessions

    def on_noticed(self, t: float, ticket: int, _: int = 0) -> None:
        """The holder's poll finds the admission: claimed (status.lua), then the flow."""
        tk, rec = self.tickets, self.record
        if tk.state[ticket] != OFFERED:
            return
        admitted_at = tk.admitted_at[ticket]
        tk.state[ticket] = CLAIMED
        self.taken_up += 1
        index = tk.owner[ticket]
        o = rec.outcomes.get(index)
        if o is not None and rec.current.get(index) == ticket:
            o.admitted_t, o.noticed_t = admitted_at, t
        self.inflow += 1
        self._peak_inflow(t)
        session = self.origin.session_s(self.draws.rng)
        expires = admitted_at + self.queue.session_ttl_s
        if behaviour.drops_out_in_flow(self.draws, self.beh):
            self.agenda.push((t + self.rnd() * session, FLOW_ENDED, ticket, 0))
            self._schedule_free(ticket, expires, LAPSED)
            self.give_up(index, ticket, t, ABANDONED)
        elif self.rnd() < self.mix.underage_share:
            self._schedule_free(ticket, min(expires, t + 0.4 * session), ENDED)
            self.give_up(index, ticket, t, REJECTED)  # the KTP step refuses the age
        elif self.paced is not None:
            draw = -math.log(1.0 - self.rnd())
            self._free_paced(ticket, self.paced.start(t, ticket, session, draw))
        elif t + session <= expires:
            self._schedule_free(ticket, t + session, REGISTERED)
        else:
            self._schedule_free(ticket, expires, LAPSED)  # ran over: the token expired
            self.give_up(index, ticket, expires, REJECTED)

    def _free_paced(self, ticket: int, end_at: float) -> None:
        """A paced flow's slot is freed when it ends, or when its token expires first."""
        expires = self.tickets.admitted_at[ticket] + self.queue.session_ttl_s
        if end_at <= expires:
            self._schedule_free(ticket, end_at, REGISTERED)
        else:
            self._schedule_free(ticket, expires, LAPSED)

    def repace(self, t: float) -> None:
        """The origin's pace from this tick on: flows that failed end (the driver tells the
        queue, `complete`: the slot is freed at once), the others get their new end."""
        paced = self.paced
        if paced is None:
            return
        failed, moved = paced.repace(t, self.origin.flow_speed(), self.origin.failure_hazard())
        for ticket in failed:
            self._schedule_free(ticket, t, ENDED)
            self.give_up(self.tickets.owner[ticket], ticket, t, ERRORS)
        for ticket in moved:
            self._free_paced(ticket, paced.flows[ticket].end_at)

    def on_slot_freed(self, t: float, ticket: int, how: int) -> None:
        tk, rec = self.tickets, self.record
        if tk.slot_until[ticket] != t:
            return  # superseded (a ghost's admission claimed after all)
        if self.paced is not None and ticket in self.paced.flows:
            self.paced.end(ticket)
            if how == LAPSED:  # ran over: the token expired
                self.give_up(tk.owner[ticket], ticket, t, REJECTED)
        if self.queue.free_slot(ticket) == CLAIMED:
            self.inflow -= 1
        if how == REGISTERED:
            self.registered += 1
            index = tk.owner[ticket]
            rec.fate[index] = REGISTERED_FATE
            rec.series.completions[rec.bin(t)] += 1
            o = rec.outcomes.get(index)
            if o is not None and rec.current.get(index) == ticket:
                o.completed_t = t

    def on_flow_ended(self, t: float, ticket: int, _: int = 0) -> None:
        """A drop-out closed the tab mid-flow: the origin sees no more of it; the slot waits."""
        if self.tickets.state[ticket] == CLAIMED:
            self.tickets.state[ticket] = DROPPED
            self.inflow -= 1

    def _peak_inflow(self, t: float) -> None:
        k = self.record.bin(t)
        inflight = self.origin.requests_in_flight(self.inflow)
        series = self.record.series
        if inflight > series.origin_inflight[k]:
            series.origin_inflight[k] = inflight

    # ------------------------------------------------------------------ load and the end

    def status_polls_per_s(self, waiting: int) -> float:
        """Status requests per second the present holders send: polite pollers as
        `pacing.total_poll_rate` sums them, manual refreshers and bots on their own schedule,
        each from every tab it keeps open."""
        mix = self.mix
        auto, manual, bots = self.present
        tabs = 1.0 + mix.multi_tab_share * 1.5  # 2 or 3 tabs for that share
        polite = 0.0
        if waiting > 0 and auto > 0:
            total = pacing.total_poll_rate(waiting, self.pace.admissions_per_s,
                                           self.pace.skip_fraction)  # fmt: skip
            polite = total * min(1.0, auto / waiting)
        by_hand = manual * 2.0 / sum(self.notice_gaps[MANUAL])
        scripted = bots * 2.0 / sum(self.notice_gaps[BOT])
        return (polite + by_hand) * tabs + scripted

    def settle(self, end: float) -> None:
        """Whoever still holds a place at the end: gone, told the wave closed, or waiting."""
        q, tk = self.queue, self.tickets
        fate = REJECTED if self.closes < end or q.full else RUN_ENDED
        for i in range(q.head, len(q.line)):
            ticket = q.line[i]
            if tk.state[ticket] != IN_LINE or tk.away[ticket]:
                continue
            if tk.gone_at[ticket] < end:
                if not tk.balked[ticket]:
                    self.give_up(tk.owner[ticket], ticket, tk.gone_at[ticket], RENEGED)
            else:
                self.give_up(tk.owner[ticket], ticket, min(end, self.closes), fate)
        for ticket in q.prequeue_block:
            self.give_up(tk.owner[ticket], ticket, end, RUN_ENDED)
        self.callbacks.settle(end, fate == REJECTED)
