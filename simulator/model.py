"""The offline wave model: the queue service's admission policy and the live driver's
registrants, as a discrete-event simulation on virtual time.

One policy, two clocks: the model does what `queue_service/lua/admit.lua` and
`lua/status.lua` do, with the service's own estimator and pacing functions imported from
`queue_service.pacing` (the ETA, the poll interval, the poll deadline), and its registrants
make the live driver's decisions (`simulator.behaviour`, `simulator.sessions`):

- arrivals from the scenario's Poisson process; before the pre-queue opens people are told to
  come back then; arrivals in the pre-queue window are shuffled at opening and go first;
- every join is answered as the service answers it: a new ticket at the back (or, for someone
  coming back with their old ticket, that place while it still holds), its ETA = tickets ahead
  x `PaceEstimate.seconds_per_place`; humans balk on it (`behaviour.balks`);
- a person whose patience runs out leaves at their next poll: saying so (the ticket is skipped
  from then on) or silently (it stays live until the poll deadline they were last given:
  `pacing.poll_deadline_ms`, poll time + told interval x 1.1 + the wave's grace);
- admission: a token bucket at `admit_rate` with `admit_burst`, while fewer than `max_active`
  slots are taken, until `quota`, between opening and close. The cursor skips tickets whose
  deadline passed (no token, no slot). A live ticket reached is admitted and holds a slot
  until its holder's deadline: present holders notice at their next poll (a second away near
  the front; manual refreshers and bots on their own schedule) and claim it, the slot then
  lasts `session_ttl_s` from admission or until the flow ends and `complete` is called. A
  ticket whose holder has gone (a ghost) costs a token and a slot until its deadline lapses;
- the flow: think time + the origin's service time (`simulator.sessions`); some drop out
  (the slot waits for the TTL), some are refused at the KTP step (under age);
- renegers may come back later with their old ticket (`behaviour.returns_later_s`).

Every reported quantity means what it means in a live run (`simulator.driver`): `admissions`
are the queue's decisions, `queue_length` its waiting + pre-queue tickets, `active` its taken
slots, `origin_inflight` requests at the origin (sessions in flow x the share of a session a
request is in flight), waits run from the latest join to the queue's admission.

Interface: `run_model(scenario, *, seed=None, admit_rate=None, max_active=None, quota=None,
population=None, sample_every=None, step_s=None, progress=None) -> RunRecord` (mode "queued",
source "model"). Per-registrant outcomes are kept for every `sample_every`-th registrant.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from queue_service import admission_policy, pacing
from queue_service.pacing import PaceEstimate, PacePrior
from simulator import sessions
from simulator.model_draws import Draws
from simulator.records import RegistrantOutcome, RunMeta, RunRecord, RunTotals, TimeSeries
from simulator.scenario import Scenario

ProgressFn = Callable[[float, int], None]  # (virtual time reached, arrivals so far)

INF = math.inf
UNLIMITED = 2**62

# Events, handled in this order at the same instant.
SLOT_FREED, FLOW_ENDED, NOTICED, CAME_BACK = range(4)
# How a slot was freed.
REGISTERED, ENDED, LAPSED = range(3)
# Ticket states.
WAITING, ADMITTED, CLAIMED, DROPPED, PASSED = range(5)
# Kinds of holder: how they poll.
AUTO, MANUAL, BOT = range(3)
# What finally happened to a person (their last word counts).
NONE, REGISTERED_FATE, BALKED, RENEGED, ABANDONED, REJECTED, RUN_ENDED = range(7)
FATE_NAMES = {BALKED: "balked", RENEGED: "reneged", ABANDONED: "abandoned",
              REJECTED: "rejected", RUN_ENDED: "run_ended"}  # fmt: skip


def default_sample_every(population: int) -> int:
    """Record at most ~50,000 registrants' outcomes."""
    return max(1, math.ceil(population / 50_000))


@dataclass(frozen=True)
class Limits:
    """The wave settings a run uses (the scenario's, or the planner's trial)."""

    admit_rate: float
    burst: float
    max_active: int
    quota: int

    @classmethod
    def of(
        cls,
        scenario: Scenario,
        admit_rate: float | None,
        max_active: int | None,
        quota: int | None,
    ) -> Limits:
        wave = scenario.wave
        rate = wave.admit_rate if admit_rate is None else admit_rate
        if rate <= 0:
            raise ValueError("admit_rate must be > 0")
        # A rate given here keeps the scenario's burst in proportion (plan scales both).
        burst = wave.burst if admit_rate is None else max(1.0, wave.burst * rate / wave.admit_rate)
        active = wave.max_active if max_active is None else max_active
        limit_quota = wave.quota if quota is None else quota
        return cls(rate, burst, active if active > 0 else UNLIMITED,
                   limit_quota if limit_quota > 0 else UNLIMITED)  # fmt: skip


class Tickets:
    """Every ticket issued, in compact parallel arrays indexed by its number (seq - 1)."""

    def __init__(self) -> None:
        self.owner = array("q")  # registrant index
        self.kind = bytearray()  # AUTO, MANUAL or BOT
        self.state = bytearray()
        self.prequeue = bytearray()
        self.silent = bytearray()  # its holder went without `leave`
        self.balked = bytearray()  # its holder left at once, on seeing the ETA
        self.may_return = bytearray()  # its holder has not come back yet (people do once)
        self.superseded = bytearray()  # its holder came back and took a new ticket
        self.position = array("q")  # place in admission order (-1 while in the pre-queue)
        self.patience = array("d")
        self.skip_at = array("d")  # the cursor skips it from then on (INF while polled)
        self.gone_at = array("d")  # its holder stopped polling (INF while present)
        self.admitted_at = array("d")
        self.slot_until = array("d")  # when its slot is freed (the event that counts)

    def __len__(self) -> int:
        return len(self.owner)

    def issue(self, owner: int, kind: int, patience: float, prequeue: bool) -> int:
        self.owner.append(owner)
        self.kind.append(kind)
        self.state.append(WAITING)
        self.prequeue.append(prequeue)
        self.silent.append(0)
        self.balked.append(0)
        self.may_return.append(1)
        self.superseded.append(0)
        self.position.append(-1)
        self.patience.append(patience)
        self.skip_at.append(INF)
        self.gone_at.append(INF)
        self.admitted_at.append(INF)
        self.slot_until.append(INF)
        return len(self.owner) - 1


class Agenda:
    """Future events: a heap for the current tick, a bucket per later tick (a calendar queue),
    so that millions of patience timers do not make every heap operation slow."""

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self.heap: list[tuple[float, int, int, int]] = []  # (t, event, ticket, detail)
        self.later: dict[int, list[tuple[float, int, int, int]]] = {}
        self.loaded_until = 0.0  # events before this time are in the heap

    def push(self, event: tuple[float, int, int, int]) -> None:
        if event[0] < self.loaded_until:
            heapq.heappush(self.heap, event)
            return
        bucket = int(event[0] // self.tick_s)
        items = self.later.get(bucket)
        if items is None:
            self.later[bucket] = [event]
        else:
            items.append(event)

    def load(self, bucket: int) -> None:
        """Called at the start of tick `bucket`: its events join the heap."""
        self.loaded_until = (bucket + 1) * self.tick_s
        items = self.later.pop(bucket, None)
        if items:
            heap = self.heap
            for event in items:
                heapq.heappush(heap, event)


class Departures:
    """People who will stop polling, by tick: the present-holder counts (for the polling
    load) and the queue's `left` counter follow them as the ticks pass."""

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self.applied = -1  # ticks up to this one are counted in
        self.by_tick: dict[int, list[int]] = {}  # tick -> [auto, manual, bot, leaves]
        self.present = [0, 0, 0]
        self.left = 0

    def add(self, t: float, kind: int, leaves: bool, sign: int = 1) -> None:
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

    def cancel(self, t: float, kind: int, leaves: bool) -> None:
        self.add(t, kind, leaves, -1)

    def apply(self, tick: int) -> None:
        self.applied = tick
        row = self.by_tick.pop(tick, None)
        if row is not None:
            for kind in (AUTO, MANUAL, BOT):
                self.present[kind] -= row[kind]
            self.left += row[3]


class Recorder:
    """Per-bin series with the live driver's definitions, totals, and sampled outcomes."""

    def __init__(self, duration: float, step: float, every: int) -> None:
        self.series = TimeSeries.empty(duration, step)
        self.step = step
        self.bins = len(self.series)
        self.every = every
        self.outcomes: dict[int, RegistrantOutcome] = {}
        self.current: dict[int, int] = {}  # sampled registrant -> their latest ticket
        self.gave_up: dict[str, int] = {}
        self.peak_polls = [0.0] * self.bins
        self.joins = [0] * self.bins  # join requests, refused ones and returns included

    def bin(self, t: float) -> int:
        k = int(t // self.step)
        return k if k < self.bins else self.bins - 1

    def give_up(self, index: int, t: float, reason: str) -> None:
        self.series.gave_up[self.bin(t)] += 1
        o = self.outcomes.get(index)
        if o is not None and o.completed_t is None:
            o.gave_up_t, o.gave_up_reason = t, reason


class WaveModel:
    """One run: state, and one handler per event."""

    def __init__(self, scenario: Scenario, limits: Limits, seed: int, population: int,
                 every: int, step: float) -> None:  # fmt: skip
        self.scenario, self.limits = scenario, limits
        wave, clock, origin = scenario.wave, scenario.clock, scenario.origin
        self.mix, self.beh, self.origin = scenario.population_mix, scenario.behaviour, origin
        self.draws = Draws(seed)
        self.rnd = self.draws.random
        self.duration = clock.duration_s
        self.opens, self.closes = clock.opens_at_s, min(clock.closes_at_s, clock.duration_s)
        self.pre_start = self.opens - wave.prequeue_s
        self.ttl, self.grace = wave.session_ttl_s, wave.abandon_after_s
        self.population = population
        self.record = Recorder(self.duration, step, every)
        self.tick_s = 1.0 if step <= 1.0 else 10.0
        self.flow_service = sessions.flow_service_s(origin)
        self.inflight_share = sessions.requests_in_flight_share(origin)
        self.bot_share = self.mix.bot_share + self.mix.joki_share
        self.pace = PaceEstimate(PacePrior(limits.admit_rate, limits.max_active
                                           if limits.max_active < UNLIMITED else 0,
                                           wave.session_estimate_s))  # fmt: skip
        self.seconds_per_place = self.pace.seconds_per_place

        self.tickets = Tickets()
        self.line = array("q")  # tickets in admission order from `line_base` on
        self.line_base = 0
        self.head = 0  # the cursor, as an index into `line`
        self.prequeue_block: list[int] = []
        self.opened = False
        self.agenda = Agenda(self.tick_s)
        self.tokens, self.tokens_at = limits.burst, self.opens
        self.active = self.inflow = 0
        # the queue's counters (WaveCounts), and the people's
        self.admitted = self.abandoned = self.ended = self.lapsed = 0
        self.registered = self.arrived = self.joins = self.prequeue_joins = self.taken_up = 0
        self.full = False
        self.prequeue_spread_s = 1.0
        self.departures = Departures(self.tick_s)
        self.present = self.departures.present  # present holders by kind, not yet reached
        self.fate = bytearray(population + population // 10 + 100)
        self.refused_in_bulk = 0
        self.individually = 0  # registrants handled one by one (the rest refused in bulk)

    def give_up(self, index: int, ticket: int, t: float, fate: int) -> None:
        """A person stops (for now): their fate, unless a newer ticket of theirs decides it."""
        if ticket >= 0 and self.tickets.superseded[ticket]:
            return
        fates = self.fate
        if index >= len(fates):
            fates.extend(bytes(index + 1 - len(fates) + 1024))
        if fates[index] != REGISTERED_FATE:
            fates[index] = fate
        self.record.give_up(index, t, FATE_NAMES[fate])

    # ------------------------------------------------------------------ arrivals and joins

    def on_arrival(self, t: float, index: int) -> None:
        self.arrived += 1
        rec = self.record
        rec.series.arrivals[rec.bin(t)] += 1
        if index % rec.every == 0:
            rec.outcomes[index] = RegistrantOutcome(index=index, is_bot=False, arrival_t=t)
        if t < self.pre_start:
            t = self.pre_start  # told to come back when the pre-queue opens
        r = self.rnd()
        kind = (
            BOT
            if r < self.bot_share
            else MANUAL
            if self.rnd() < self.mix.manual_refresh_share
            else AUTO
        )
        patience = self.draws.lognormal(self.mix.patience_median_s, self.mix.patience_sigma)
        o = rec.outcomes.get(index)
        if o is not None:
            o.is_bot = kind == BOT
        self.join(t, index, kind, patience, -1)

    def on_came_back(self, t: float, old: int, _: int = 0) -> None:
        tk = self.tickets  # a return is not a first attempt: no arrival counted
        if tk.gone_at[old] == INF:
            return  # admission reached them before they went: nobody left, nobody returns
        tk.may_return[old] = 0
        self.join(t, tk.owner[old], tk.kind[old], tk.patience[old], old)

    def join(self, t: float, index: int, kind: int, patience: float, old: int) -> None:
        """POST join, answered as join.lua answers it, then the person's first decision."""
        tk = self.tickets
        self.record.joins[self.record.bin(t)] += 1
        if t >= self.closes or self.full:
            self.give_up(index, -1, t, REJECTED)  # 409 wave_closed / wave_full
            return
        ticket = self._held_place(t, old) if old >= 0 else -1
        if ticket >= 0 and tk.state[ticket] == ADMITTED:
            self._cancel_leaving(ticket)
            self._record_join(t, index, ticket, None)
            self.on_noticed(t, ticket)  # the answer carries the token: claimed now
            return
        if ticket < 0:
            if old >= 0:
                tk.superseded[old] = 1
            in_pre = t < self.opens
            ticket = tk.issue(index, kind, patience, in_pre)
            if old >= 0:
                tk.may_return[ticket] = 0
            if in_pre:
                self.prequeue_joins += 1
                self.prequeue_block.append(ticket)
            else:
                tk.position[ticket] = self.line_base + len(self.line)
                self.line.append(ticket)
        else:
            self._cancel_leaving(ticket)  # present again, at the same place
        self.joins += 1
        self.present[kind] += 1
        eta = None
        if self.opened:
            eta = pacing.eta_s(self._ahead(ticket), self.seconds_per_place)
        self._record_join(t, index, ticket, eta)
        if kind == BOT:
            return  # scripts neither balk nor lose patience (behaviour.balks, reneges)
        if eta is not None and self.rnd() < 1.0 - math.exp(-eta / self.beh.balk_scale_s):
            self._plan_leaving(ticket, t, t, pacing.poll_after_ms(eta) / 1000)
            tk.balked[ticket] = 1
            self.give_up(index, ticket, t, BALKED)
            return
        self._plan_patience(t, ticket, patience, eta)

    def _held_place(self, t: float, old: int) -> int:
        """The old ticket, if the join with it as proof hands its place back."""
        tk = self.tickets
        state = tk.state[old]
        if state == WAITING and (tk.silent[old] or tk.gone_at[old] == INF):
            return old  # not reached yet, and no `leave` marked it: the place holds
        if state == ADMITTED and tk.slot_until[old] > t:
            return old
        return -1

    def _record_join(self, t: float, index: int, ticket: int, eta: float | None) -> None:
        rec = self.record
        o = rec.outcomes.get(index)
        if o is None:
            return
        o.gave_up_t = o.gave_up_reason = None
        if rec.current.get(index) == ticket:
            return  # the same place handed back: it was taken at the first join
        rec.current[index] = ticket
        o.joined_t, o.prequeue = t, not self.opened
        o.position_at_join = None if eta is None else self._ahead(ticket) + 1
        o.eta_at_join_s = eta
        o.reached_t = None

    def _ahead(self, ticket: int) -> int:
        return self.tickets.position[ticket] - self.line_base - self.head

    # ------------------------------------------------------------------ leaving

    def _plan_patience(self, t: float, ticket: int, patience: float, eta: float | None) -> None:
        """Decided at join, as the person's traits decide it: when patience runs out (counted
        from the latest join, or the opening: behaviour.patience_from) they leave at their next
        poll. The poll interval then is the one the service tells at that place, predicted by
        the ETA itself (the wait left then); if admission reaches them first, none of it
        happens (`_cancel_leaving`)."""
        start = t if t > self.opens else self.opens
        out = start + patience
        if out >= self.duration:
            return
        left_then = (eta if eta is not None else 0.0) - (out - start)
        told = pacing.poll_after_ms(max(0.0, left_then)) / 1000
        gap = self._poll_gap(self.tickets.kind[ticket], told)
        gone = out + self.rnd() * gap
        self._plan_leaving(ticket, gone, gone - gap, told)
        if self.tickets.may_return[ticket] and self.rnd() < self.beh.return_later_p:
            back = gone + self.draws.lognormal(self.beh.return_median_s, self.beh.return_sigma)
            if back < self.closes:
                self.agenda.push((back, CAME_BACK, ticket, 0))

    def _plan_leaving(self, ticket: int, gone: float, last_poll: float, told_s: float) -> None:
        """Leave (POST leave: skipped from then on) or go silently (live until the deadline
        of the last poll: `pacing.poll_deadline_ms`)."""
        tk = self.tickets
        tk.gone_at[ticket] = gone
        silent = self.rnd() < self.beh.silent_abandon_share
        tk.silent[ticket] = silent
        if silent:
            deadline = admission_policy.poll_deadline(last_poll, told_s, self.grace)
            tk.skip_at[ticket] = max(gone, deadline)
        else:
            tk.skip_at[ticket] = gone
        self.departures.add(gone, tk.kind[ticket], not silent)

    def _cancel_leaving(self, ticket: int) -> None:
        tk = self.tickets
        if tk.gone_at[ticket] < INF:
            self.departures.cancel(tk.gone_at[ticket], tk.kind[ticket], not tk.silent[ticket])
        tk.gone_at[ticket] = tk.skip_at[ticket] = INF

    def _eta(self, ticket: int) -> float:
        if self.tickets.position[ticket] < 0:
            return 0.0  # pre-queue: no place yet
        return pacing.eta_s(max(0, self._ahead(ticket)), self.seconds_per_place)

    def _poll_gap(self, kind: int, told_s: float) -> float:
        beh = self.beh
        if kind == BOT:
            return self.draws.uniform(beh.bot_poll_min_s, beh.bot_poll_max_s)
        if kind == MANUAL:
            return self.draws.uniform(beh.manual_refresh_min_s, beh.manual_refresh_max_s)
        return told_s * self.draws.uniform(1.0 - beh.poll_jitter, 1.0 + beh.poll_jitter)

    def _notice_delay(self, kind: int) -> float:
        """From admission to the holder's next poll, which brings the token. Near the front
        the told interval is the shortest, MIN_POLL_MS."""
        beh, d = self.beh, self.draws
        if kind == BOT:
            return d.residual(beh.bot_poll_min_s, beh.bot_poll_max_s)
        if kind == MANUAL:
            return d.residual(beh.manual_refresh_min_s, beh.manual_refresh_max_s)
        told = pacing.MIN_POLL_MS / 1000
        return d.residual(told * (1.0 - beh.poll_jitter), told * (1.0 + beh.poll_jitter))

    # ------------------------------------------------------------------ admission

    def open_wave(self) -> None:
        """The pre-queue block, shuffled, goes first (lua/_lib.lua open_if_due)."""
        self.opened = True
        block = self.prequeue_block
        self.draws.rng.shuffle(block)
        self.prequeue_spread_s = admission_policy.prequeue_spread_s(len(block))
        for ticket in block:
            self.tickets.position[ticket] = self.line_base + len(self.line)
            self.line.append(ticket)
        block.clear()

    def _first_poll_after_opening(self) -> float:
        """Pre-queue holders were told to come back at a random point of a window just after
        the opening (`pacing.prequeue_poll_after_ms`)."""
        told = 1.0 + self.rnd() * self.prequeue_spread_s
        jitter = self.beh.poll_jitter
        return self.opens + told * self.draws.uniform(1.0 - jitter, 1.0 + jitter)

    def next_admission_at(self, now: float) -> float:
        """The earliest time the next admission step can admit anyone."""
        lim = self.limits
        if not self.opened:
            return self.opens
        if self.full or self.head >= len(self.line) or self.active >= lim.max_active:
            return INF
        t = now
        if self.tokens < 1.0:
            t = max(t, self.tokens_at + (1.0 - self.tokens) / lim.admit_rate)
        return t if t < self.closes else INF

    def admit_one(self, t: float) -> None:
        """The cursor moves past skipped tickets to the next live one and admits it."""
        lim, tk, line = self.limits, self.tickets, self.line
        self.tokens = min(lim.burst, self.tokens + (t - self.tokens_at) * lim.admit_rate)
        self.tokens_at = t
        while self.head < len(line):
            ticket = line[self.head]
            self.head += 1
            self._reached(t, ticket)
            if tk.skip_at[ticket] <= t:
                tk.state[ticket] = PASSED
                self.abandoned += tk.silent[ticket]  # a missed deadline (leaves count at once)
                if not tk.balked[ticket]:
                    self.give_up(tk.owner[ticket], ticket, tk.gone_at[ticket], RENEGED)
                continue
            self._admit(t, ticket)
            break
        if self.head > 1_000_000 and self.head * 2 > len(line):
            # Drop the consumed prefix so memory follows the live line, not the wave.
            del line[: self.head]
            self.line_base += self.head
            self.head = 0

    def _admit(self, t: float, ticket: int) -> None:
        lim, tk, rec = self.limits, self.tickets, self.record
        self.tokens -= 1.0
        self.admitted += 1
        self.active += 1
        k = rec.bin(t)
        rec.series.admissions[k] += 1
        tk.state[ticket] = ADMITTED
        tk.admitted_at[ticket] = t
        if tk.gone_at[ticket] <= t:  # a ghost: the slot waits for the holder's deadline
            self._schedule_free(ticket, min(tk.skip_at[ticket], t + self.ttl), LAPSED)
            if not tk.balked[ticket]:
                self.give_up(tk.owner[ticket], ticket, tk.gone_at[ticket], RENEGED)
        else:
            self._cancel_leaving(ticket)  # they notice at their next poll, long before
            self.present[tk.kind[ticket]] -= 1
            notice = t + self._notice_delay(tk.kind[ticket])
            if tk.prequeue[ticket] and tk.kind[ticket] == AUTO:
                notice = max(notice, self._first_poll_after_opening())
            tk.slot_until[ticket] = INF
            self.agenda.push((notice, NOTICED, ticket, 0))
        if self.admitted >= lim.quota:
            self.full = True

    def _reached(self, t: float, ticket: int) -> None:
        rec = self.record
        index = self.tickets.owner[ticket]
        if index % rec.every == 0 and rec.current.get(index) == ticket:
            rec.outcomes[index].reached_t = t

    def _schedule_free(self, ticket: int, at: float, how: int) -> None:
        self.tickets.slot_until[ticket] = at
        self.agenda.push((at, SLOT_FREED, ticket, how))

    # ------------------------------------------------------------------ sessions

    def on_noticed(self, t: float, ticket: int, _: int = 0) -> None:
        """The holder's poll finds the admission: claimed (status.lua), then the flow."""
        tk, rec = self.tickets, self.record
        if tk.state[ticket] != ADMITTED:
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
        session = sessions.think_time_s(self.draws.rng, self.origin) + self.flow_service
        expires = admitted_at + self.ttl
        if self.rnd() < self.beh.in_flow_dropout:
            self.agenda.push((t + self.rnd() * session, FLOW_ENDED, ticket, 0))
            self._schedule_free(ticket, expires, LAPSED)
            self.give_up(index, ticket, t, ABANDONED)
        elif self.rnd() < self.mix.underage_share:
            self._schedule_free(ticket, min(expires, t + 0.4 * session), ENDED)
            self.give_up(index, ticket, t, REJECTED)  # the KTP step refuses the age
        elif t + session <= expires:
            self._schedule_free(ticket, t + session, REGISTERED)
        else:
            self._schedule_free(ticket, expires, LAPSED)  # ran over: the token expired
            self.give_up(index, ticket, expires, REJECTED)

    def on_slot_freed(self, t: float, ticket: int, how: int) -> None:
        tk, rec = self.tickets, self.record
        if tk.slot_until[ticket] != t:
            return  # superseded (a ghost's admission claimed after all)
        tk.slot_until[ticket] = -INF
        self.active -= 1
        self.ended += 1  # the queue counts it completed (complete) or expired (lapsed)
        state = tk.state[ticket]
        if state == CLAIMED:
            self.inflow -= 1
        elif state == ADMITTED:
            self.lapsed += 1  # never taken up
        tk.state[ticket] = PASSED
        if how == REGISTERED:
            self.registered += 1
            self.fate[tk.owner[ticket]] = REGISTERED_FATE
            rec.series.completions[rec.bin(t)] += 1
            index = tk.owner[ticket]
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
        inflight = round(self.inflow * self.inflight_share)
        series = self.record.series
        if inflight > series.origin_inflight[k]:
            series.origin_inflight[k] = inflight

    # ------------------------------------------------------------------ the admission loop

    def on_tick(self, t: float) -> None:
        """What every process does each admission interval: count, learn the pace."""
        waiting = len(self.line) - self.head if self.opened else 0
        admitting = self.opened and not self.full and t < self.closes
        skipped = self.line_base + self.head - self.admitted  # passed by the cursor, not admitted
        self.pace.observe(t, self.admitted, skipped, waiting, self.active, self.ended, admitting)
        self.seconds_per_place = self.pace.seconds_per_place
        rec = self.record
        k = rec.bin(t)
        series = rec.series
        series.queue_length[k] = waiting + len(self.prequeue_block)
        series.active[k] = self.active
        polls = self.status_polls_per_s(waiting)
        if polls > rec.peak_polls[k]:
            rec.peak_polls[k] = polls

    def status_polls_per_s(self, waiting: int) -> float:
        """Status requests per second the present holders send: polite pollers as
        `pacing.total_poll_rate` sums them, manual refreshers and bots on their own schedule,
        each from every tab it keeps open."""
        beh, mix = self.beh, self.mix
        auto, manual, bots = self.present
        tabs = 1.0 + mix.multi_tab_share * 1.5  # 2 or 3 tabs for that share
        polite = 0.0
        if waiting > 0 and auto > 0:
            total = pacing.total_poll_rate(waiting, self.pace.admissions_per_s,
                                           self.pace.skip_fraction)  # fmt: skip
            polite = total * min(1.0, auto / waiting)
        by_hand = manual * 2.0 / (beh.manual_refresh_min_s + beh.manual_refresh_max_s)
        scripted = bots * 2.0 / (beh.bot_poll_min_s + beh.bot_poll_max_s)
        return (polite + by_hand) * tabs + scripted

    # ------------------------------------------------------------------ the run

    def run(self, times: Iterator[float], progress: ProgressFn | None) -> None:
        """Events in time order: ticks of the admission loop, arrivals, timers, admissions."""
        heap, agenda = self.agenda.heap, self.agenda
        handlers: dict[int, Callable[[float, int, int], None]] = {
            SLOT_FREED: self.on_slot_freed,
            FLOW_ENDED: self.on_flow_ended,
            NOTICED: self.on_noticed,
            CAME_BACK: self.on_came_back,
        }
        next_arrival = next(times, INF)
        index = tick = 0
        next_tick = next_report = now = 0.0
        end = self.duration
        while True:
            t_event = heap[0][0] if heap else INF
            t_admit = self.next_admission_at(now)
            t = min(next_arrival, t_event, t_admit, next_tick)
            if t > end:
                break
            now = t
            if t == next_tick:
                agenda.load(tick)
                self.departures.apply(tick)
                self.on_tick(t)
                tick += 1
                next_tick = tick * self.tick_s
                if progress is not None and t >= next_report:
                    progress(t, self.arrived)
                    next_report = t + max(self.tick_s, end / 200.0)
            elif t == t_event:
                _, kind, ticket, detail = heapq.heappop(heap)
                handlers[kind](t, ticket, detail)
            elif t == t_admit:
                if not self.opened:
                    self.open_wave()
                    continue
                # admit while nothing else comes first (the admission loop's step)
                bound = next_arrival if next_arrival < next_tick else next_tick
                while True:
                    self.admit_one(t)
                    now = t
                    t = self.next_admission_at(t)
                    if t > bound or (heap and t > heap[0][0]):
                        break
            elif self.full:
                index = self.refuse_rest(t, index)
                next_arrival = INF
            else:
                self.on_arrival(t, index)
                index += 1
                self.individually = index
                next_arrival = next(times, INF)
        if not self.opened:
            self.open_wave()
        self.settle_the_rest(end)
        if progress is not None:
            progress(end, self.arrived)

    def refuse_rest(self, t_from: float, first_index: int) -> int:
        """With the wave full every later first attempt is refused (409 wave_full) and changes
        nothing else: Poisson counts per bin instead of one by one; sampled registrants get an
        outcome at a uniform time inside their bin."""
        rec, process = self.record, self.scenario.arrival_process()
        process.n = float(self.population)
        index, step = first_index, rec.step
        k = int(t_from // step)
        while k * step < self.closes:
            lo, hi = max(t_from, k * step), min((k + 1) * step, self.closes)
            n = self.draws.poisson(process.expected_count(lo, hi))
            if n:
                self.arrived += n
                rec.series.arrivals[rec.bin(lo)] += n
                rec.series.gave_up[rec.bin(lo)] += n
                rec.joins[rec.bin(lo)] += n
                self.refused_in_bulk += n
                first = -(-index // rec.every) * rec.every
                picked = range(first, index + n, rec.every)
                for i, u in zip(picked, sorted(self.rnd() for _ in picked), strict=True):
                    at = lo + u * (hi - lo)
                    rec.outcomes[i] = RegistrantOutcome(
                        index=i, is_bot=self.rnd() < self.bot_share, arrival_t=at,
                        gave_up_t=at, gave_up_reason="rejected",
                    )  # fmt: skip
                index += n
            k += 1
        return index

    def settle_the_rest(self, end: float) -> None:
        """Whoever still holds a place at the end: gone, told the wave closed, or waiting."""
        tk = self.tickets
        fate = REJECTED if self.closes < end or self.full else RUN_ENDED
        for i in range(self.head, len(self.line)):
            ticket = self.line[i]
            if tk.state[ticket] != WAITING:
                continue
            if tk.gone_at[ticket] < end:
                if not tk.balked[ticket]:
                    self.give_up(tk.owner[ticket], ticket, tk.gone_at[ticket], RENEGED)
            else:
                self.give_up(tk.owner[ticket], ticket, min(end, self.closes), fate)
        for ticket in self.prequeue_block:
            self.give_up(tk.owner[ticket], ticket, end, RUN_ENDED)

    def peak_joins_per_s(self) -> float:
        """The busiest bin's joins per second, or the arrival process's own peak rate when
        bins are longer than a second (the opening's first second is steeper than its minute)."""
        rec = self.record
        busiest = max(rec.joins, default=0) / rec.step
        if rec.step <= 1.0:
            return busiest
        process = self.scenario.arrival_process()
        process.n = float(self.population)
        instant = max(process.rate(self.opens + k) for k in range(0, 600, 5))
        return max(busiest, instant)

    def gave_up_totals(self) -> dict[str, int]:
        """People by their last word (a reneger who came back and registered is not one)."""
        counts = [0] * len(FATE_NAMES) * 2
        fates = self.fate
        for index in range(min(self.individually, len(fates))):
            counts[fates[index]] += 1
        counts[RUN_ENDED] += counts[NONE]  # still in the flow at the end
        totals = {name: counts[code] for code, name in FATE_NAMES.items() if counts[code]}
        if self.refused_in_bulk:
            totals["rejected"] = totals.get("rejected", 0) + self.refused_in_bulk
        return totals

    def result(self) -> RunRecord:
        scenario, lim, rec, wave = self.scenario, self.limits, self.record, self.scenario.wave
        series = rec.series
        for k in range(len(series)):
            series.admit_rate_target[k] = (
                lim.admit_rate if self.opens <= k * rec.step < self.closes else 0.0
            )
            series.origin_capacity[k] = scenario.origin.capacity
        meta = RunMeta(
            mode="queued",
            scenario=scenario.name,
            seed=0,
            source="model",
            population=self.population,
            duration_s=self.duration,
            opens_at_s=self.opens,
            prequeue_s=wave.prequeue_s,
            admit_rate=lim.admit_rate,
            admit_burst=wave.burst,
            max_active=0 if lim.max_active == UNLIMITED else lim.max_active,
            session_ttl_s=wave.session_ttl_s,
            abandon_after_s=wave.abandon_after_s,
            origin_capacity=scenario.origin.capacity,
            quota=0 if lim.quota == UNLIMITED else lim.quota,
            sample_every=rec.every,
            notes=[
                "model: origin_inflight is requests at the origin (sessions in flow x the "
                f"{self.inflight_share:.0%} of a session a request is in flight)",
            ],
        )
        totals = RunTotals(
            arrived=self.arrived,
            joined=self.joins,
            prequeue=self.prequeue_joins,
            admitted=self.taken_up,
            completed=self.registered,
            gave_up=self.gave_up_totals(),
            requests=int(self.registered * scenario.origin.requests_per_session),
            peak_origin_inflight=max(series.origin_inflight, default=0),
            peak_queue_length=max(series.queue_length, default=0),
            queue_admitted=self.admitted,
            lapsed=self.lapsed,
            peak_status_polls_per_s=max(rec.peak_polls, default=0.0),
            peak_joins_per_s=self.peak_joins_per_s(),
        )
        outcomes = sorted(rec.outcomes.values(), key=lambda o: o.index)
        return RunRecord(meta, series, outcomes, totals)


def run_model(
    scenario: Scenario,
    *,
    seed: int | None = None,
    admit_rate: float | None = None,
    max_active: int | None = None,
    quota: int | None = None,
    population: int | None = None,
    sample_every: int | None = None,
    step_s: float | None = None,
    progress: ProgressFn | None = None,
) -> RunRecord:
    seed = scenario.seed if seed is None else seed
    limits = Limits.of(scenario, admit_rate, max_active, quota)
    size = scenario.population_size if population is None else population
    every = sample_every or default_sample_every(size)
    duration = scenario.clock.duration_s
    step = step_s or (1.0 if duration <= 2 * 3600 else 60.0)
    model = WaveModel(scenario, limits, seed, size, every, step)
    process = scenario.arrival_process()
    process.n = float(size)
    model.run(process.times(seed), progress)
    record = model.result()
    record.meta.seed = seed
    return record
