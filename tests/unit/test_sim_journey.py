"""The registrant's journey, with no I/O: fed scripted answers and times, it says what to do
next. Every executor (the live driver, Locust) runs exactly these decisions."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from simulator.behaviour import BehaviourParams, PersonDraws
from simulator.callback_params import CallbackParams
from simulator.client import ORIGIN, QUEUE, Answer, Request, parse_answer
from simulator.flow import STEPS
from simulator.journey import (
    REGISTERED,
    Action,
    Call,
    Journey,
    JourneyObserver,
    JourneySettings,
    Pause,
    Stage,
    Stop,
)
from simulator.registrants import Population, Registrant
from simulator.scenario import OriginParams

WAVE = "w"
OPENS_AT = 100.0
PEOPLE = Population(2, 3000)
# Nobody gives up on one error or balks by chance, nor drops out of the flow: each test says
# what it changes.
STEADY = BehaviourParams(
    persistence_first=1.0,
    persistence_decay=1.0,
    balk_scale_s=1e12,
    in_flow_dropout=0.0,
    silent_abandon_share=0.0,
    return_later_p=0.0,
)


def person(**traits: Any) -> Registrant:
    """The first registrant of the population with these traits."""
    return next(r for r in PEOPLE if all(getattr(r, k) == v for k, v in traits.items()))


def settings(behaviour: BehaviourParams = STEADY, **changes: Any) -> JourneySettings:
    base = JourneySettings(
        wave=WAVE,
        queued=True,
        verified_joins=False,
        opens_at_s=OPENS_AT,
        behaviour=behaviour,
        origin=OriginParams(session_new_median_s=1.0, session_returning_median_s=1.0),
    )
    return dataclasses.replace(base, **changes)


def answer(status: int | None, body: dict[str, Any] | None = None, **headers: str) -> Answer:
    content = orjson.dumps(body) if body is not None else b""
    return parse_answer(status, content, headers.get("retry_after"))


def view(state: str, ticket: str = "7.i.s.m", **fields: Any) -> dict[str, Any]:
    return {"wave": WAVE, "state": state, "ticket": ticket, "poll_after_ms": 1000, **fields}


class Seen(JourneyObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def placed(self, v: Any, now: float, new_place: bool) -> None:
        self.events.append(("placed", new_place))

    def admitted(self, token: str, now: float) -> None:
        self.events.append(("admitted", token))

    def registered(self, now: float) -> None:
        self.events.append(("registered", now))

    def completed(self, acknowledged: bool) -> None:
        self.events.append(("completed", acknowledged))

    def went_away(self, reason: str, now: float) -> None:
        self.events.append(("went_away", reason))

    def came_back(self, now: float) -> None:
        self.events.append(("came_back", now))


class Run:
    """Drives a journey by hand: a clock, and answers given as the journey calls."""

    def __init__(self, journey: Journey, now: float = 200.0) -> None:
        self.journey, self.now = journey, now
        self.action: Action = journey.begin(now)

    def call(self) -> Request:
        assert isinstance(self.action, Call), self.action
        return self.action.request

    def answer(self, *answers: Answer) -> Action:
        assert isinstance(self.action, Call), self.action
        self.action = self.journey.answered(list(answers), self.now)
        return self.action

    def wait(self) -> float:
        assert isinstance(self.action, Pause), self.action
        seconds = self.action.seconds
        self.now += seconds
        self.action = self.journey.resumed(self.now)
        return seconds

    def through_flow(self, responses: Sequence[int] = (201, 200, 202, 200, 201)) -> None:
        """Every step of the registration flow answered (thinking time passes first)."""
        bodies = [{"account_id": "a1"}, {}, {"simulated_sms_code": "123456"}, {}, {}]
        for status, body in zip(responses, bodies, strict=True):
            self.wait()
            assert self.call().target == ORIGIN
            self.answer(answer(status, body))


def test_join_poll_as_told_register_and_complete() -> None:
    seen = Seen()
    r = person(is_bot=False, manual_refresher=False, tabs=1)
    run = Run(Journey(r, settings(), PersonDraws(1), seen))
    join = run.call()
    assert (join.target, join.method, join.path) == (QUEUE, "POST", f"/api/v1/waves/{WAVE}/join")
    assert join.json == {"registrant": r.registrant_id}
    run.answer(answer(201, view("waiting", position=3, ahead=2, eta_s=6, poll_after_ms=2000)))
    assert run.journey.stage is Stage.WAITING
    assert 1.6 <= run.wait() <= 2.4  # poll_after_ms with +-20% jitter
    poll = run.call()
    assert poll.path.endswith("/status") and poll.headers["X-Queue-Ticket"] == "7.i.s.m"
    run.answer(answer(200, view("admitted", token="tok", position=0, ahead=0, eta_s=0)))
    assert run.journey.stage is Stage.IN_FLOW
    run.through_flow()
    complete = run.call()
    assert complete.path.endswith("/complete") and complete.headers["Authorization"] == "Bearer tok"
    assert run.answer(answer(204)) == Stop(REGISTERED, REGISTERED)
    assert seen.events == [
        ("placed", True),
        ("admitted", "tok"),
        ("registered", run.now),
        ("completed", True),
    ]


def test_every_flow_request_carries_the_admission_token() -> None:
    run = Run(Journey(person(tabs=1), settings(), PersonDraws(2)))
    run.answer(answer(201, view("admitted", token="tok")))
    run.wait()
    assert run.call().headers["Authorization"] == "Bearer tok"


def test_patience_counts_from_the_opening_in_the_prequeue_and_renegers_leave_saying_so() -> None:
    r = person(is_bot=False, manual_refresher=False, tabs=1)
    run = Run(Journey(r, settings(), PersonDraws(3)), now=OPENS_AT - 50)
    run.answer(answer(201, view("prequeue", position=None, eta_s=50, poll_after_ms=1000)))
    assert run.journey.patience_from == OPENS_AT
    while isinstance(run.action, Pause):
        run.wait()
        if run.call().path.endswith("/leave"):
            break
        run.answer(answer(200, view("waiting", poll_after_ms=1000, position=9)))
    assert run.now - OPENS_AT >= r.patience_s
    assert run.now - OPENS_AT < r.patience_s + 1.3  # at the first poll after patience ran out
    assert run.answer(answer(204)) == Stop("reneged", "reneged")


def test_a_reneger_may_come_back_once_with_the_old_ticket() -> None:
    seen = Seen()
    params = dataclasses.replace(STEADY, return_later_p=1.0, return_median_s=30.0)
    r = person(is_bot=False, manual_refresher=False, tabs=1)
    run = Run(Journey(r, settings(params), PersonDraws(4), seen), now=OPENS_AT)
    run.answer(answer(201, view("waiting", poll_after_ms=1000)))
    run.wait()
    while not run.call().path.endswith("/leave"):
        run.answer(answer(200, view("waiting", poll_after_ms=1000)))
        run.wait()
    run.answer(answer(204))
    assert run.journey.stage is Stage.AWAY
    assert run.wait() > 0
    rejoin = run.call()
    assert rejoin.path.endswith("/join") and rejoin.headers["X-Queue-Ticket"] == "7.i.s.m"
    run.answer(answer(200, view("waiting", poll_after_ms=1000)))  # the same place, handed back
    assert seen.events == [
        ("placed", True),
        ("went_away", "reneged"),
        ("came_back", run.now),
        ("placed", False),
    ]
    run.wait()
    while not run.call().path.endswith("/leave"):  # patience again; no second return
        run.answer(answer(200, view("waiting", poll_after_ms=1000)))
        run.wait()
    assert run.answer(answer(204)) == Stop("reneged", "reneged")


def test_a_long_eta_makes_people_balk_but_never_bots() -> None:
    params = dataclasses.replace(STEADY, balk_scale_s=1e-9)
    human = Run(Journey(person(is_bot=False), settings(params), PersonDraws(5)))
    human.answer(answer(201, view("waiting", eta_s=600)))
    assert human.call().path.endswith("/leave")
    bot = Run(Journey(person(is_bot=True), settings(params), PersonDraws(5)))
    bot.answer(answer(201, view("waiting", eta_s=600)))
    assert isinstance(bot.action, Pause)


def test_silent_leavers_send_nothing() -> None:
    params = dataclasses.replace(STEADY, balk_scale_s=1e-9, silent_abandon_share=1.0)
    run = Run(Journey(person(is_bot=False), settings(params), PersonDraws(6)))
    assert run.answer(answer(201, view("waiting", eta_s=600))) == Stop("balked", "balked")


def test_every_open_tab_polls_and_the_tab_with_the_token_wins() -> None:
    r = person(is_bot=False, manual_refresher=False, tabs=3)
    run = Run(Journey(r, settings(), PersonDraws(7)))
    run.answer(answer(201, view("waiting")))
    run.wait()
    assert isinstance(run.action, Call) and run.action.copies == 3
    run.answer(
        answer(429, {"error": {"code": "rate_limited"}}, retry_after="2"),
        answer(200, view("waiting")),
        answer(200, view("admitted", token="tok")),
    )
    assert run.journey.stage is Stage.IN_FLOW and run.journey.token == "tok"


def test_the_wave_not_open_yet_is_waited_out_and_refusals_end_the_journey() -> None:
    run = Run(Journey(person(), settings(), PersonDraws(8)))
    not_yet = {"error": {"code": "wave_not_open_yet"}}
    run.answer(answer(409, not_yet, retry_after="42"))
    assert run.wait() == 42.0
    detail = "rejected: join 409 wave_closed"
    assert run.answer(answer(409, {"error": {"code": "wave_closed"}})) == Stop("rejected", detail)


def test_errors_are_retried_as_people_do_and_retry_after_is_honoured() -> None:
    human = person(is_bot=False, retry_habit="human")
    run = Run(Journey(human, settings(), PersonDraws(9)))
    run.answer(answer(503, {"error": {"code": "store_unavailable"}}, retry_after="90"))
    assert run.wait() >= 90.0
    assert run.call().path.endswith("/join")
    run.answer(answer(None))  # no answer at all
    assert run.wait() > 0
    quitter = dataclasses.replace(STEADY, persistence_first=0.0)
    gives_up = Run(Journey(human, settings(quitter), PersonDraws(9)))
    assert gives_up.answer(answer(None)) == Stop("errors", "errors")


@pytest.mark.parametrize("state, reason", [("closed", "rejected"), ("expired", "abandoned")])
def test_a_final_state_ends_the_wait(state: str, reason: str) -> None:
    run = Run(Journey(person(tabs=1), settings(), PersonDraws(10)))
    run.answer(answer(201, view("waiting")))
    run.wait()
    assert run.answer(answer(200, view(state))) == Stop(reason, f"{reason}: queue said {state}")


def test_a_verified_wave_signs_in_at_the_origin_before_every_join() -> None:
    r = person(tabs=1)
    run = Run(Journey(r, settings(verified_joins=True), PersonDraws(11)))
    sign_in = run.call()
    assert (sign_in.target, sign_in.path) == (ORIGIN, "/api/v1/sign-in")
    run.answer(answer(200, {"enqueue_token": "et"}))
    assert run.call().json == {"enqueue_token": "et"}
    refused = Run(Journey(r, settings(verified_joins=True), PersonDraws(11)))
    stop = refused.answer(answer(400, {"error": {"code": "invalid_email"}}))
    assert stop == Stop("rejected", "rejected: sign-in 400 invalid_email")


def test_a_refusal_in_the_flow_still_ends_the_session_at_the_queue() -> None:
    run = Run(Journey(person(tabs=1), settings(), PersonDraws(12)))
    run.answer(answer(201, view("admitted", token="tok")))
    run.wait()
    run.answer(answer(201, {"account_id": "a1"}))
    run.wait()
    run.answer(answer(413, {"error": {"code": "payload_too_large"}}))  # the photo is resized
    assert run.call().path.endswith("/ktp")
    run.answer(answer(400, {"error": {"code": "invalid_nik"}}))
    assert run.call().path.endswith("/complete")
    assert run.answer(answer(204)) == Stop("rejected", "rejected: origin 400 invalid_nik at ktp")


def test_a_drop_out_closes_the_tab_without_completing() -> None:
    params = dataclasses.replace(STEADY, in_flow_dropout=1.0)
    run = Run(Journey(person(tabs=1), settings(params), PersonDraws(13)))
    run.answer(answer(201, view("admitted", token="tok")))
    while isinstance(run.action, Pause):
        run.wait()
        run.answer(answer(201, {"account_id": "a1", "simulated_sms_code": "1"}))
    assert run.action == Stop("abandoned", "abandoned")
    assert run.journey.step < len(STEPS)


def test_without_a_queue_the_journey_is_the_flow_alone() -> None:
    run = Run(Journey(person(tabs=1), settings(queued=False), PersonDraws(14)))
    assert isinstance(run.action, Pause)
    run.through_flow()
    assert run.action == Stop(REGISTERED, REGISTERED)


def test_the_same_draws_give_the_same_journey() -> None:
    def script(seed: int) -> list[float]:
        run = Run(Journey(person(tabs=1), settings(), PersonDraws(seed)))
        run.answer(answer(201, view("waiting")))
        waits = []
        for _ in range(5):
            waits.append(run.wait())
            run.answer(answer(200, view("waiting")))
        return waits

    assert script(15) == script(15) != script(16)


# ----------------------------------------------------------------------------- call-backs


class Called(JourneyObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def opted_in(self, channel: str, kind: str, address: str, now: float) -> None:
        self.events.append(("opted_in", channel, kind))

    def returned(self, in_time: bool | None, now: float) -> None:
        self.events.append(("returned", in_time, now))


def opting_in(never_return_share: float = 0.0, channel: str = "sms") -> JourneySettings:
    params = CallbackParams(
        optin_share=1.0,
        never_return_share=never_return_share,
        return_median_s=30.0,
        return_sigma=0.0,
        lead_s=60.0,
        return_window_s=120.0,
        channels={channel: 1.0},
    )
    return settings(callbacks=params)


def joined_and_opted_in(journey: Journey, now: float = 200.0) -> Action:
    journey.begin(now)
    action = journey.answered([answer(201, view("waiting", position=500, eta_s=600))], now)
    assert isinstance(action, Call) and action.request.path == f"/api/v1/waves/{WAVE}/notify"
    return action


def test_a_person_who_opts_in_leaves_the_page_and_comes_back_by_the_link() -> None:
    seen = Called()
    r = person(is_bot=False)
    journey = Journey(r, opting_in(), PersonDraws(1), seen)
    action = joined_and_opted_in(journey)
    assert action.request.json == {
        "contact": {"kind": "sms", "address": r.phone},
        "language": "id",
    }
    action = journey.answered([answer(201, {"callback": {"kind": "sms"}})], 201.0)
    assert action == Pause(math.inf, until_notified=True)
    assert journey.stage is Stage.CALLED_AWAY and seen.events == [("opted_in", "sms", "sms")]
    # the message: the return link, then the person's own delay
    action = journey.notified("http://127.0.0.1:1/w/w/return?code=abc", 500.0)
    assert action == Pause(30.0)
    action = journey.resumed(530.0)
    assert isinstance(action, Call) and action.request.json == {"code": "abc"}
    action = journey.answered([answer(200, {"result": "back", "ticket": "8.i.s.m"})], 531.0)
    assert isinstance(action, Call) and action.request.headers["X-Queue-Ticket"] == "8.i.s.m"
    assert seen.events[-1] == ("returned", True, 531.0)
    # back in line: patience no longer runs out (they came because their turn is near)
    action = journey.answered([answer(200, view("waiting", position=3, eta_s=2))], 5000.0)
    assert isinstance(action, Pause)
    action = journey.resumed(9000.0)
    assert isinstance(action, Call) and action.request.path.endswith("/status")


def test_a_person_who_never_means_to_come_back_stops_at_opting_in() -> None:
    journey = Journey(person(is_bot=False), opting_in(never_return_share=1.0), PersonDraws(1))
    joined_and_opted_in(journey)
    action = journey.answered([answer(201, {"callback": {"kind": "sms"}})], 201.0)
    assert action == Stop("abandoned", "abandoned: opted in, never came back")


def test_a_spent_link_takes_an_admission_still_held_or_stops() -> None:
    for status_view, expected in (
        (view("admitted", token="tok"), ("returned", True)),
        (view("closed"), ("returned", None)),
        (view("expired"), ("returned", False)),
    ):
        seen = Called()
        journey = Journey(person(is_bot=False), opting_in(), PersonDraws(1), seen)
        joined_and_opted_in(journey)
        journey.answered([answer(201, {})], 201.0)
        journey.notified("http://x/w/w/return?code=abc", 300.0)
        journey.resumed(330.0)
        action = journey.answered([answer(409, {"error": {"code": "return_link_used"}})], 331.0)
        assert isinstance(action, Call) and action.request.path.endswith("/status")
        action = journey.answered([answer(200, status_view)], 332.0)
        assert seen.events[-1][:2] == expected
        if expected[1] is True:
            assert journey.stage is Stage.IN_FLOW
        else:
            assert isinstance(action, Stop)


def test_a_channel_the_executor_cannot_receive_is_sent_as_sms() -> None:
    r = person(is_bot=False)
    journey = Journey(r, opting_in(channel="email"), PersonDraws(1), Called())
    action = joined_and_opted_in(journey)
    assert action.request.json is not None
    assert action.request.json["contact"] == {"kind": "sms", "address": r.phone}


def test_a_refused_opt_in_keeps_the_page_open() -> None:
    journey = Journey(person(is_bot=False), opting_in(), PersonDraws(1))
    joined_and_opted_in(journey)
    action = journey.answered([answer(409, {"error": {"code": "callbacks_off"}})], 201.0)
    assert isinstance(action, Pause) and not action.until_notified
    assert journey.stage is Stage.WAITING
