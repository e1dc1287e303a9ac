"""One synthetic registrant of a live run: its journey (`simulator.journey`) executed over
aiohttp, and what happened written into its `RegistrantOutcome` and the run's series.

The executor sleeps when the journey pauses and sends what it calls (every copy at once: the
open tabs poll together); the journey decides everything else. Recording follows what the
journey says happened (`JourneyObserver`), and what each answer was (requests sent, 429s,
origin errors and timeouts, the origin's service times). A registrant that opts in to
call-backs is listed at the run's gateway (`simulator.driver.gateway`) under the address it
gave; a message to it is recorded (`deliver`) and the first one ends the journey's
`Pause(until_notified=True)`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import jwt

from queue_service.protocol import HolderState
from simulator.behaviour import PersonDraws
from simulator.client import ORIGIN, Answer, Request, TicketView
from simulator.driver.config import synthetic_address
from simulator.driver.gateway import Gateway
from simulator.driver.samplers import CursorTrace, LiveCounts
from simulator.flow import StepOutcome
from simulator.journey import (
    REGISTERED,
    Call,
    Journey,
    JourneyObserver,
    JourneySettings,
    Pause,
    Stage,
)
from simulator.records import RegistrantOutcome, TimeSeries
from simulator.registrants import Registrant
from simulator.transport import send

log = logging.getLogger(__name__)

QUEUE_TIMEOUT_S = 10.0
IN_LINE = frozenset({HolderState.WAITING, HolderState.CLOSING, HolderState.PAUSED})
"""States of a place in line after the opening (the cursor will reach it)."""


@dataclass
class Admission:
    """One admission as the queue signed it (for fairness checks): the token's claims."""

    index: int
    prequeue: bool
    joined_t: float
    admitted_t: float  # when the queue admitted (from the token), run seconds
    noticed_t: float  # when the registrant's poll saw it
    ticket: int | None
    issued_at: int | None


@dataclass
class DriverStats:
    """What the driver saw beyond the run record."""

    complete_calls: int = 0
    complete_failures: int = 0
    completed_at_queue: set[int] = field(default_factory=set)
    """Registrants whose `complete` call the queue acknowledged (204)."""
    peak_live_registrants: int = 0
    admissions: list[Admission] = field(default_factory=list)
    wall_s: float = 0.0
    step_seconds: dict[str, list[float]] = field(default_factory=dict)
    """Origin steps answered: [count, total seconds] each, as the registrants timed them (the
    origin's real speed on this machine, for a model of the same run)."""
    give_up_details: Counter[str] = field(default_factory=Counter)
    """Why registrants stopped, finer than the record's reasons (e.g. `rejected: origin 409
    nik_taken at ktp`)."""


@dataclass
class Crowd:
    """What every registrant of one live run shares."""

    session: aiohttp.ClientSession
    settings: JourneySettings
    mode: str
    seed: int
    queue_url: str | None
    origin_url: str
    origin_timeout_s: float
    series: TimeSeries
    counts: LiveCounts
    cursor: CursorTrace
    stats: DriverStats
    clock: Callable[[], float]
    """Seconds since the start of the run."""
    t0_wall: float
    """The start of the run, Unix seconds (admission tokens are signed in them)."""
    gateway: Gateway | None = None
    """Receives the call-back messages (a wave with call-backs)."""


class LiveRegistrant(JourneyObserver):
    def __init__(self, crowd: Crowd, registrant: Registrant, outcome: RegistrantOutcome) -> None:
        self.crowd = crowd
        self.registrant = registrant
        self.outcome = outcome
        # the registrant's own address, believed by a queue that trusts this proxy
        self.address = {"X-Forwarded-For": synthetic_address(registrant.index)}
        self.links: asyncio.Queue[str] = asyncio.Queue()
        """Return links of the call-back messages that reached this registrant."""

    async def run(self) -> None:
        crowd = self.crowd
        draws = PersonDraws(f"{crowd.seed}:{self.registrant.index}:{crowd.mode}")
        journey = Journey(self.registrant, crowd.settings, draws, self)
        try:
            action = journey.begin(crowd.clock())
            while True:
                if isinstance(action, Pause) and action.until_notified:
                    link = await self.links.get()  # the run's end cancels a wait for nothing
                    action = journey.notified(link, crowd.clock())
                elif isinstance(action, Pause):
                    await asyncio.sleep(action.seconds)
                    action = journey.resumed(crowd.clock())
                elif isinstance(action, Call):
                    answers = await asyncio.gather(
                        *(self.send(action.request) for _ in range(action.copies))
                    )
                    action = journey.answered(answers, crowd.clock())
                else:
                    break
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not take the other registrants down
            log.exception("registrant %d failed", self.registrant.index)
            self.give_up("errors")
            return
        if action.reason != REGISTERED:
            self.give_up(action.reason)
            crowd.stats.give_up_details[action.detail] += 1

    def give_up(self, reason: str) -> None:
        outcome = self.outcome
        if outcome.gave_up_t is None and outcome.completed_t is None:
            outcome.gave_up_t, outcome.gave_up_reason = self.crowd.clock(), reason
            self.crowd.series.add("gave_up", outcome.gave_up_t)

    # ------------------------------------------------------------------ sending

    async def send(self, request: Request) -> Answer:
        crowd, outcome = self.crowd, self.outcome
        outcome.requests += 1
        if request.target == ORIGIN:
            crowd.counts.client_inflight += 1
            try:
                answer = await send(
                    crowd.session, crowd.origin_url, request, timeout_s=crowd.origin_timeout_s
                )
            finally:
                crowd.counts.client_inflight -= 1
        else:
            assert crowd.queue_url is not None
            answer = await send(
                crowd.session,
                crowd.queue_url,
                request,
                timeout_s=QUEUE_TIMEOUT_S,
                headers=self.address,
            )
        if answer.status == 429:
            outcome.rate_limited += 1
            crowd.series.add("rate_limited", crowd.clock())
        return answer

    # ------------------------------------------------------------------ recording

    def stage_changed(self, old: Stage | None, new: Stage, now: float) -> None:
        counts = self.crowd.counts
        for stage, step in ((old, -1), (new, 1)):
            if stage is Stage.WAITING:
                counts.waiting += step
            elif stage is Stage.IN_FLOW and self.crowd.settings.queued:
                counts.active += step

    def placed(self, view: TicketView, now: float, new_place: bool) -> None:
        if not new_place:
            return
        outcome = self.outcome
        outcome.joined_t = now
        outcome.prequeue = view.state is HolderState.PREQUEUE
        outcome.position_at_join = view.position
        outcome.eta_at_join_s = view.eta_s
        outcome.reached_t = None
        self.crowd.cursor.placed(outcome.index, view.seq if view.state in IN_LINE else None)

    def polled(self, view: TicketView, now: float) -> None:
        self.crowd.cursor.saw(self.outcome.index, view.ahead, now)

    def admitted(self, token: str, now: float) -> None:
        """Record the admission at the time the queue signed into the token (whole seconds),
        not when this registrant's poll noticed it: admissions/s and fairness are about the
        queue's decisions, and a poll can come up to 30 s later."""
        outcome, crowd = self.outcome, self.crowd
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            claims = {}
        assert outcome.joined_t is not None
        issued_at = claims.get("iat") if isinstance(claims.get("iat"), int) else None
        ticket = claims.get("tkt") if isinstance(claims.get("tkt"), int) else None
        admitted = now
        if issued_at is not None:
            # `iat` is truncated to the second: take the middle of that second.
            signed = issued_at + 0.5 - crowd.t0_wall
            admitted = min(now, max(outcome.joined_t, signed))
        outcome.admitted_t, outcome.noticed_t = admitted, now
        outcome.ticket, outcome.admitted_iat = ticket, issued_at
        crowd.series.add("admissions", admitted)
        crowd.stats.admissions.append(
            Admission(
                index=outcome.index,
                prequeue=outcome.prequeue,
                joined_t=outcome.joined_t,
                admitted_t=admitted,
                noticed_t=now,
                ticket=ticket,
                issued_at=issued_at,
            )
        )

    def origin_answered(self, step: str, answer: Answer, outcome: StepOutcome, now: float) -> None:
        record, series = self.outcome, self.crowd.series
        if outcome is StepOutcome.OK:
            timed = self.crowd.stats.step_seconds.setdefault(step, [0.0, 0.0])
            timed[0] += 1
            timed[1] += answer.elapsed_s
            if record.first_served_t is None:
                record.first_served_t = now
            if record.admitted_t is None:  # no queue: the first request served admits
                record.admitted_t = now
                series.add("admissions", now)
        elif outcome is StepOutcome.TIMEOUT:
            record.errors += 1
            series.add("origin_timeouts", now)
        elif outcome is StepOutcome.OVERLOAD:
            record.errors += 1
            series.add("origin_errors", now)

    def registered(self, now: float) -> None:
        self.outcome.completed_t = now
        self.crowd.series.add("completions", now)

    def completed(self, acknowledged: bool) -> None:
        stats = self.crowd.stats
        stats.complete_calls += 1
        if acknowledged:
            stats.completed_at_queue.add(self.outcome.index)
        else:
            stats.complete_failures += 1

    def went_away(self, reason: str, now: float) -> None:
        self.give_up(reason)

    def came_back(self, now: float) -> None:
        self.outcome.gave_up_t = self.outcome.gave_up_reason = None

    # ------------------------------------------------------------------ call-backs

    def opted_in(self, channel: str, kind: str, address: str, now: float) -> None:
        gateway = self.crowd.gateway
        if gateway is None:
            raise RuntimeError("a registrant opted in to call-backs, and no gateway listens")
        gateway.expect(kind, address, self)
        self.outcome.callback_channel, self.outcome.opted_in_t = channel, now

    def deliver(self, kind: str, link: str) -> None:
        """A call-back message reached this registrant (the gateway): 'near', 'turn'."""
        outcome, crowd = self.outcome, self.crowd
        now = crowd.clock()
        channel = outcome.callback_channel or "sms"
        series = crowd.series
        series.messages.setdefault(channel, [0] * len(series))[series.bin(now)] += 1
        if kind == "turn" and outcome.called_t is None and outcome.returned_t is None:
            outcome.called_t = now
        if outcome.notified_t is None:
            outcome.notified_t = now
            self.links.put_nowait(link)

    def returned(self, in_time: bool | None, now: float) -> None:
        self.outcome.returned_t, self.outcome.returned_in_time = now, in_time
