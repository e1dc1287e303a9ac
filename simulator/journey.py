"""One registrant's journey through a wave: every decision the registrant takes, as a state
machine with no I/O and no clock of its own.

The shape is h11's: everything that affects the journey lives here, on the instance; the
caller feeds in what happened (the answers to the requests it was told to send, the time now)
and gets the next action out:

    journey = Journey(registrant, settings, rng, observer)
    action = journey.begin(now)
    while not isinstance(action, Stop):
        if isinstance(action, Pause):          # sleep, then
            action = journey.resumed(now)
        else:                                  # a Call: send `action.request` `copies` times
            action = journey.answered(answers, now)

Executors (the live driver's `simulator.driver.registrant` on aiohttp, the Locust
`RegistrantUser` on gevent) do only that: sleep, send a `simulator.client.Request`, parse the
answer with `simulator.client.parse_answer`. Which request to send, how long to wait, when to
give up and why, are the journey's. The offline model takes the same decisions from the same
`simulator.behaviour` functions on virtual time, without a journey per person (millions).

Actions: `Call(request, copies)` (join, sign in, poll from every open tab, leave, a step of the
origin's registration flow, complete), `Pause(seconds)` (until the next poll, before a
retry, the time on a form, away before coming back), `Stop(reason, detail)` (registered, or
gave up: balked, reneged, errors, abandoned, rejected).

Stages (`journey.stage`): JOINING (signing in at the registration site first when the wave
verifies joins, retrying as people do) -> WAITING (holding a place: balk at the ETA, poll as
told, renege when patience runs out) -> LEAVING (saying so; silent leavers skip it) -> AWAY
(a reneger coming back once, with the old ticket) or DONE; WAITING -> IN_FLOW (admitted:
the registration flow at the origin with the token; a run without a queue starts here) ->
COMPLETING (the session ends at the queue, unless the person just closed the tab) -> DONE.

A new stage is a member of `Stage`, the handlers that emit its calls and pauses, and their
continuations; the executors need no change, since every action is a request to send or a
time to wait. Call-backs (issue 24) grew in that way, with one new input: after a join that
keeps the place (no balk), `behaviour.opts_in` may decide the person leaves the line; opting in
is a `Call` (`QueueApi.notify`, the contact their channel needs), then the stage CALLED_AWAY:
a person who never means to come back stops there (abandoned); the others wait for the message
(`Pause(inf, until_notified=True)`). The message is the new input: whatever receives it (the
live driver's webhook receiver, `simulator.driver.gateway`; a Locust rehearsal's,
`loadtests.callbacks`) feeds it in with
`journey.notified(link, now)`, and the journey pauses `behaviour.callback_return_s` before
coming back by the link (`QueueApi.come_back`): back or not reached yet, it polls again and
keeps its place without reneging; the wave closed, it stops (rejected); the link used up (the
place ended, or it was admitted while they were away), one status poll says whether an
admission is still there to take. The
`JourneyObserver` hears what happened (a place taken, an admission, the flow's answers, a
registration) for the executor's records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from queue_service.protocol import HolderState
from simulator import behaviour, sessions
from simulator.behaviour import BehaviourParams, PersonDraws
from simulator.callback_params import CallbackParams
from simulator.client import (
    FINAL_STATES,
    WAVE_NOT_OPEN_YET,
    Answer,
    QueueApi,
    Request,
    TicketView,
    enqueue_token,
    return_code,
)
from simulator.flow import STEPS, FlowContext, StepOutcome, pick_photo
from simulator.registrants import Registrant
from simulator.scenario import OriginParams, Scenario

REGISTERED = "registered"
"""`Stop.reason` of a journey that finished the registration flow."""
FINAL_REASONS = {
    HolderState.CLOSED: "rejected",  # the wave closed or filled before this turn
    HolderState.EXPIRED: "abandoned",  # the place lapsed
    HolderState.COMPLETED: "rejected",  # used already: nothing left to wait for
}


class Stage(Enum):
    JOINING = "joining"
    WAITING = "waiting"
    LEAVING = "leaving"
    AWAY = "away"
    CALLED_AWAY = "called_away"
    """Opted in to call-backs and left the page: waiting for the message, then coming back."""
    IN_FLOW = "in_flow"
    COMPLETING = "completing"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Call:
    request: Request
    copies: int = 1
    """Send it this many times at once (one status poll from every open tab)."""


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float
    until_notified: bool = False
    """Ends early when a call-back message comes: the executor feeds it in with
    `Journey.notified` instead of `resumed`."""


@dataclass(frozen=True, slots=True)
class Stop:
    reason: str
    """REGISTERED, or why the registrant gave up (`simulator.records.GIVE_UP_REASONS`)."""
    detail: str
    """Finer than the reason, e.g. `rejected: origin 409 nik_taken at ktp`."""


Action = Call | Pause | Stop


class JourneyObserver:
    """What an executor may want to record; every method does nothing unless overridden."""

    def stage_changed(self, old: Stage | None, new: Stage, now: float) -> None: ...
    def placed(self, view: TicketView, now: float, new_place: bool) -> None:
        """A join answered with a place: a new one, or the holder's own handed back."""

    def polled(self, view: TicketView, now: float) -> None:
        """A status answer (the freshest of the open tabs')."""

    def admitted(self, token: str, now: float) -> None: ...
    def origin_answered(self, step: str, answer: Answer, outcome: StepOutcome, now: float) -> None:
        """An answer to a request of the registration flow."""

    def registered(self, now: float) -> None:
        """The registration flow finished at the origin."""

    def completed(self, acknowledged: bool) -> None:
        """The queue answered `complete` (acknowledged: 204)."""

    def went_away(self, reason: str, now: float) -> None:
        """Gave up for now, and will come back (`came_back`)."""

    def came_back(self, now: float) -> None: ...
    def opted_in(self, channel: str, kind: str, address: str, now: float) -> None:
        """Left the line to be called back: `channel` as decided, `kind` and `address` as
        sent (an executor that cannot receive a channel sends another)."""

    def returned(self, in_time: bool | None, now: float) -> None:
        """Came back by the return link: while the place held (True), after it ended (False),
        or the wave had closed (None)."""


@dataclass(frozen=True)
class JourneySettings:
    """What every registrant of one run shares."""

    wave: str
    queued: bool
    """False: no waiting room, straight at the origin."""
    verified_joins: bool
    opens_at_s: float
    """The opening on the executor's clock (patience in the pre-queue starts there)."""
    behaviour: BehaviourParams
    origin: OriginParams
    callbacks: CallbackParams = field(default_factory=CallbackParams)
    """Who opts in to call-backs; off unless the executor can receive the messages."""
    receivable: frozenset[str] = frozenset({"sms", "whatsapp"})
    """The contact kinds the executor receives; a person who picked another is sent as SMS."""

    @classmethod
    def of(
        cls,
        scenario: Scenario,
        *,
        queued: bool,
        wave: str | None = None,
        opens_at_s: float,
        callbacks: bool = False,
    ) -> JourneySettings:
        """`callbacks`: the executor receives call-back messages (the scenario's people opt
        in); without, nobody does."""
        return cls(
            wave=wave or scenario.wave.id,
            queued=queued,
            verified_joins=scenario.wave.verified_joins,
            opens_at_s=opens_at_s,
            behaviour=scenario.behaviour,
            origin=scenario.origin,
            callbacks=scenario.callbacks if callbacks else CallbackParams(),
        )


Answered = Callable[[Sequence[Answer], float], Action]
Resumed = Callable[[float], Action]


class Journey:
    """One registrant, one run. Not thread-safe; one executor drives it."""

    def __init__(
        self,
        registrant: Registrant,
        settings: JourneySettings,
        rng: PersonDraws,
        observer: JourneyObserver | None = None,
    ) -> None:
        self.registrant = registrant
        self.settings = settings
        self.params = settings.behaviour
        self.rng = rng
        self.observer = observer or JourneyObserver()
        self.api = QueueApi(settings.wave)
        self.stage: Stage | None = None
        self.ticket: str | None = None
        """The holder's ticket: shown again on every join, it hands the place back."""
        self.view: TicketView | None = None
        """The latest view the queue gave (join or status)."""
        self.poll_after_ms: int | None = None
        """What the last answer said about the next poll (None: it said nothing)."""
        self.token: str | None = None
        self.patience_from = 0.0
        self.may_return = True
        self.join_failures = 0
        self.poll_failures = 0
        self.flow: FlowContext | None = None
        self.step = 0
        self.step_failures = 0
        self.drop_at: int | None = None
        self.think_s = 0.0
        self.back_after_s = 0.0
        """Opted in: how long after the first message they come back."""
        self.return_code: str | None = None
        self.stays = False
        """Came back after a call-back: waits for the turn without losing patience."""
        self._on_answer: Answered | None = None
        self._on_resume: Resumed | None = None

    # ------------------------------------------------------------------ feeding it

    def begin(self, now: float) -> Action:
        if not self.settings.queued:
            return self._start_flow(now)
        return self._join(now)

    def answered(self, answers: Sequence[Answer], now: float) -> Action:
        """The answers to the last `Call` (one per copy, in any order)."""
        handle, self._on_answer = self._on_answer, None
        if handle is None or not answers:
            raise RuntimeError(f"no call is waiting for an answer (stage {self.stage})")
        return handle(answers, now)

    def notified(self, link: str, now: float) -> Action:
        """A call-back message reached the person during a `Pause(until_notified=True)`:
        `link` is its return link."""
        if self.stage is not Stage.CALLED_AWAY or self.return_code is not None:
            raise RuntimeError(f"not waiting for a call-back (stage {self.stage})")
        self.return_code = return_code(link)
        return self._pause(self.back_after_s, self._come_back_by_link)

    def resumed(self, now: float) -> Action:
        """The last `Pause` is over."""
        resume, self._on_resume = self._on_resume, None
        if resume is None:
            raise RuntimeError(f"no pause to resume from (stage {self.stage})")
        return resume(now)

    # ------------------------------------------------------------------ emitting actions

    def _enter(self, stage: Stage, now: float) -> None:
        if stage is not self.stage:
            old, self.stage = self.stage, stage
            self.observer.stage_changed(old, stage, now)

    def _call(self, request: Request, then: Answered, copies: int = 1) -> Call:
        self._on_answer = then
        return Call(request, copies)

    def _pause(self, seconds: float, then: Resumed) -> Pause:
        self._on_resume = then
        return Pause(seconds)

    def _stop(self, reason: str, detail: str, now: float) -> Stop:
        self._enter(Stage.DONE, now)
        return Stop(reason, detail)

    # ------------------------------------------------------------------ joining

    def _join(self, now: float) -> Action:
        self._enter(Stage.JOINING, now)
        r = self.registrant
        if self.settings.verified_joins:  # a fresh enqueue token for every join: they live minutes
            return self._call(self.api.sign_in(r.email, r.phone), self._signed_in)
        return self._call(self.api.join({"registrant": r.registrant_id}, self.ticket), self._joined)

    def _signed_in(self, answers: Sequence[Answer], now: float) -> Action:
        answer = answers[0]
        token = enqueue_token(answer)
        if token is None:
            if answer.status is None or answer.status >= 500:
                return self._stop("errors", "errors: sign-in at the origin failed", now)
            detail = f"rejected: sign-in {answer.status} {answer.error_code}"
            return self._stop("rejected", detail, now)
        return self._call(self.api.join({"enqueue_token": token}, self.ticket), self._joined)

    def _joined(self, answers: Sequence[Answer], now: float) -> Action:
        answer = answers[0]
        view = answer.view
        if view is not None and view.ticket:
            new_place = view.ticket != self.ticket
            self.ticket = view.ticket
            self.observer.placed(view, now, new_place)
            return self._hold(view, now)
        status = answer.status
        if status == 409 and answer.error_code == WAVE_NOT_OPEN_YET:
            return self._pause(answer.retry_after_s or 1.0, self._join)
        if status is not None and 400 <= status < 500 and status != 429:
            return self._stop("rejected", f"rejected: join {status} {answer.error_code}", now)
        self.join_failures += 1
        delay = behaviour.retry_delay_s(
            self.rng, self.registrant, self.join_failures, self.params, answer.retry_after_s
        )
        if delay is None:
            return self._stop("errors", "errors", now)
        return self._pause(delay, self._join)

    # ------------------------------------------------------------------ waiting

    def _hold(self, view: TicketView, now: float) -> Action:
        """A place: balk at the ETA shown, or start waiting (patience counts from now, or
        from the opening for a place in the pre-queue)."""
        self._enter(Stage.WAITING, now)
        self.view, self.poll_after_ms = view, view.poll_after_ms
        self.join_failures = self.poll_failures = 0
        if behaviour.balks(self.rng, self.registrant, view.state, view.eta_s, self.params):
            return self._leave("balked", now)
        self.patience_from = behaviour.patience_from(now, self.settings.opens_at_s)
        if self.settings.callbacks.enabled and not self.stays:
            channel = behaviour.opts_in(self.rng, self.registrant, self.settings.callbacks)
            if channel is not None:
                return self._opt_in(channel, now)
        return self._wait(now)

    def _wait(self, now: float) -> Action:
        view = self.view
        assert view is not None
        if view.admitted and view.token:
            return self._admitted(view.token, now)
        if view.state in FINAL_STATES:
            reason = FINAL_REASONS[view.state]
            return self._stop(reason, f"{reason}: queue said {view.state}", now)
        delay = behaviour.poll_delay_s(self.rng, self.registrant, self.poll_after_ms, self.params)
        return self._pause(delay, self._poll)

    def _poll(self, now: float) -> Action:
        if not self.stays and behaviour.reneges(self.registrant, now - self.patience_from):
            return self._leave("reneged", now)
        assert self.ticket is not None
        copies = behaviour.open_tabs(self.registrant)
        return self._call(self.api.status(self.ticket), self._polled, copies)

    def _polled(self, answers: Sequence[Answer], now: float) -> Action:
        views = [view for answer in answers if answer.status == 200 and (view := answer.view)]
        if views:  # the freshest tab: one that brings the token, else any
            view = next((v for v in views if v.admitted), views[0])
            self.view, self.poll_after_ms = view, view.poll_after_ms
            self.observer.polled(view, now)
            return self._wait(now)
        answer = answers[0]
        self.poll_after_ms = None  # told nothing: the default period
        if answer.status in (401, 404):
            return self._stop(
                "rejected", f"rejected: status {answer.status} {answer.error_code}", now
            )
        if answer.status == 429:
            # The waiting page honours Retry-After; a bot does not (and gains nothing).
            if not self.registrant.is_bot and answer.retry_after_s:
                return self._pause(answer.retry_after_s, self._wait)
            return self._wait(now)
        self.poll_failures += 1
        delay = behaviour.retry_delay_s(
            self.rng, self.registrant, self.poll_failures, self.params, answer.retry_after_s
        )
        if delay is None:
            return self._stop("errors", "errors", now)
        return self._pause(delay, self._wait)

    # ------------------------------------------------------------------ call-backs

    def _opt_in(self, channel: str, now: float) -> Action:
        kind = channel if channel in self.settings.receivable else "sms"
        address = self.registrant.email if kind == "email" else self.registrant.phone
        assert self.ticket is not None

        def answered(answers: Sequence[Answer], at: float) -> Action:
            if answers[0].status not in (200, 201):
                return self._wait(at)  # refused: they keep the page open
            self.observer.opted_in(channel, kind, address, at)
            back = behaviour.callback_return_s(self.rng, self.settings.callbacks)
            if back is None:
                return self._stop("abandoned", "abandoned: opted in, never came back", at)
            self.back_after_s = back
            self._enter(Stage.CALLED_AWAY, at)
            self._on_resume = self._never_told
            return Pause(math.inf, until_notified=True)

        return self._call(self.api.notify(self.ticket, kind, address), answered)

    def _never_told(self, now: float) -> Action:
        return self._stop("run_ended", "run_ended: no call-back came", now)

    def _come_back_by_link(self, now: float) -> Action:
        assert self.return_code is not None
        return self._call(self.api.come_back(self.return_code), self._came_back)

    def _came_back(self, answers: Sequence[Answer], now: float) -> Action:
        answer = answers[0]
        result = answer.body.get("result") if answer.status == 200 else None
        if result in ("back", "waiting"):
            self.observer.returned(True, now)
            ticket = answer.body.get("ticket")
            self.ticket = ticket if isinstance(ticket, str) and ticket else self.ticket
            self.stays = True
            self._enter(Stage.WAITING, now)
            self.poll_after_ms = None
            return self._poll(now)
        if result == "closed":
            self.observer.returned(None, now)
            return self._stop("rejected", "rejected: the wave closed before they came back", now)
        assert self.ticket is not None  # the link is used up: is an admission still there?
        return self._call(self.api.status(self.ticket), self._after_spent_link)

    def _after_spent_link(self, answers: Sequence[Answer], now: float) -> Action:
        view = answers[0].view
        if view is not None and view.admitted and view.token:
            self.observer.returned(True, now)  # admitted while away, and the slot still held
            return self._admitted(view.token, now)
        if view is not None and view.state is HolderState.CLOSED:
            # the wave closed or filled, and its places (and their links) ended with it
            self.observer.returned(None, now)
            return self._stop("rejected", "rejected: the wave closed before they came back", now)
        self.observer.returned(False, now)
        return self._stop("abandoned", "abandoned: came back after the place ended", now)

    # ------------------------------------------------------------------ leaving

    def _leave(self, reason: str, now: float) -> Action:
        if behaviour.abandons_silently(self.rng, self.params):
            return self._gone(reason, now)
        self._enter(Stage.LEAVING, now)
        assert self.ticket is not None
        return self._call(self.api.leave(self.ticket), lambda _, at: self._gone(reason, at))

    def _gone(self, reason: str, now: float) -> Action:
        """Gone: for good, or (a reneger, once) to come back later with the old ticket, so a
        place still held is handed back."""
        if reason == "reneged" and self.may_return:
            back = behaviour.returns_later_s(self.rng, self.params)
            if back is not None:
                self.may_return = False
                self._enter(Stage.AWAY, now)
                self.observer.went_away(reason, now)
                return self._pause(back, self._come_back)
        return self._stop(reason, reason, now)

    def _come_back(self, now: float) -> Action:
        self.observer.came_back(now)
        return self._join(now)

    # ------------------------------------------------------------------ the origin

    def _admitted(self, token: str, now: float) -> Action:
        self.token = token
        self.observer.admitted(token, now)
        return self._start_flow(now)

    def _start_flow(self, now: float) -> Action:
        self._enter(Stage.IN_FLOW, now)
        rng = self.rng
        self.flow = FlowContext(self.registrant, photo=pick_photo(rng), token=self.token)
        dropping = behaviour.drops_out_in_flow(rng, self.params)
        self.drop_at = rng.randrange(len(STEPS)) if dropping else None
        # the person's own time on the forms, between requests (simulator.sessions)
        self.think_s = sessions.think_time_s(rng, self.settings.origin) / len(STEPS)
        self.step = 0
        return self._next_step(now)

    def _next_step(self, now: float) -> Action:
        if self.step == len(STEPS):
            self.observer.registered(now)
            return self._end_session(REGISTERED, REGISTERED, now)
        if self.step == self.drop_at:
            # closes the tab: no `complete`, the slot waits for the session's TTL
            return self._stop("abandoned", "abandoned", now)
        self.step_failures = 0
        return self._pause(self.think_s, self._send_step)

    def _send_step(self, now: float) -> Action:
        assert self.flow is not None
        return self._call(STEPS[self.step].build(self.flow), self._step_answered)

    def _step_answered(self, answers: Sequence[Answer], now: float) -> Action:
        answer, step, flow = answers[0], STEPS[self.step], self.flow
        assert flow is not None
        outcome = step.judge(answer)
        self.observer.origin_answered(step.name, answer, outcome, now)
        if outcome is StepOutcome.OK:
            step.remember(flow, dict(answer.body))
            self.step += 1
            return self._next_step(now)
        if outcome is StepOutcome.REFUSED:
            if answer.status in (413, None) and step.name == "ktp":
                flow.resize_photo()  # the person shrinks the photo and uploads it again
                return self._send_step(now)
            if answer.status == 429:
                return self._pause(answer.retry_after_s or 1.0, self._send_step)
            detail = f"rejected: origin {answer.status} {answer.error_code} at {step.name}"
            return self._end_session("rejected", detail, now)
        self.step_failures += 1
        delay = behaviour.retry_delay_s(
            self.rng, self.registrant, self.step_failures, self.params, answer.retry_after_s
        )
        if delay is None:
            return self._end_session("errors", "errors", now)
        return self._pause(delay, self._send_step)

    def _end_session(self, reason: str, detail: str, now: float) -> Action:
        """The end of an admitted session: the queue is told, so the slot is freed at once."""
        if self.token is None:
            return self._stop(reason, detail, now)
        self._enter(Stage.COMPLETING, now)

        def told(answers: Sequence[Answer], at: float) -> Action:
            self.observer.completed(answers[0].status == 204)
            return self._stop(reason, detail, at)

        return self._call(self.api.complete(self.token), told)
