"""Locust user classes: who hits the waiting room during a rehearsal.

- `RegistrantUser`: a synthetic person from `simulator.registrants.Population` on their
  journey (`simulator.journey`, the live driver's own: join, poll as told, balk or renege,
  come back once, register at the origin with the admission token, complete). The user only
  executes it: sleeps when it pauses (compressed by --poll-cap-s) and sends what it calls. In
  a scenario with call-backs some opt in, leave the line and wait for the message the queue
  sends to the rehearsal's gateway (`loadtests.callbacks`), then come back by its link.
- `BotUser`: a scripted client that hammers join and status as fast as it can and ignores
  Retry-After; the queue should refuse most of it (429).
- `RefreshStormUser`: a person who keeps hitting F5 (page, re-join, status in quick bursts);
  their ticket and place must survive every refresh.
- `AdminUser`: one SRE who changes the wave's admit_rate mid-test through the admin API.

All of them use `FastHttpUser` (geventhttpclient): the queue's hot paths are cheap, so the load
generator, not the service, would otherwise be the bottleneck. Requests are built by
`simulator.client` (dynamic URLs grouped by its `name`), every answer is read by it and judged
with `catch_response=True`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
import orjson
from locust import FastHttpUser, between, constant, task
from locust.user.task import LOCUST_STATE_STOPPING
from urllib3 import encode_multipart_formdata

from loadtests import callbacks, counters
from loadtests.answers import answer_of
from loadtests.options import LoadSettings
from loadtests.runtime import load_settings, population
from loadtests.tally import TALLY
from loadtests.targets import DEFAULT_HOST
from queue_service.protocol import HolderState
from simulator.behaviour import PersonDraws
from simulator.client import (
    JOIN,
    QUEUE,
    STATUS,
    Answer,
    QueueApi,
    Request,
    TicketView,
    enqueue_token,
)
from simulator.journey import Call, Journey, JourneyObserver, JourneySettings, Pause
from simulator.registrants import Registrant

log = logging.getLogger("loadtests.users")

ADMIN_WAVE = "/admin/v1/waves/[wave]"

Judge = Callable[[Answer], str | None]

_next_index = itertools.count()
CALL_WAIT_SLICE_S = 1.0
"""How often a user away for a call-back looks whether the run is stopping."""


class QueueUser(FastHttpUser):
    """Shared plumbing: settings, draws, and one way to send a request and judge the answer."""

    abstract = True
    host = DEFAULT_HOST  # loopback unless --host names another target
    # Counted as bot traffic in the verdict (share of requests the queue rate-limited).
    is_bot_traffic = False

    settings: LoadSettings
    rng: PersonDraws
    api: QueueApi

    def on_start(self) -> None:
        self.settings = load_settings(self.environment)
        self.rng = PersonDraws()
        self.api = QueueApi(self.settings.wave)

    def call_queue(self, request: Request, judge: Judge | None = None) -> Answer:
        """One queue request; its `expect` are the statuses that are a correct answer here (a
        429 is correct for a bot, for instance). 5xx and lost answers are always failures."""
        json = None if request.json is None else dict(request.json)
        with self.client.request(
            request.method,
            request.path,
            name=request.name,
            json=json,
            headers=dict(request.headers),
            catch_response=True,
        ) as response:
            status = int(response.status_code or 0)
            answer = answer_of(status, response.content, response.headers)
            TALLY.add(counters.QUEUE_REQUESTS)
            if self.is_bot_traffic:
                TALLY.add(counters.BOT_REQUESTS)
            if status == 429:
                TALLY.add(counters.QUEUE_RATE_LIMITED)
                if self.is_bot_traffic:
                    TALLY.add(counters.BOT_RATE_LIMITED)
            if status >= 500:
                TALLY.add(counters.QUEUE_5XX)
            problem = None
            if status not in request.expect or status >= 500 or status == 0:
                problem = f"unexpected {status} {answer.error_code or ''}".strip()
            elif judge is not None:
                problem = judge(answer)
            if problem:
                response.failure(problem)
            else:
                response.success()
        return answer

    def call_origin(self, request: Request) -> Answer:
        """One request to the registration site: 4xx are its business answers (bad NIK, photo
        too large, under age); 5xx and lost answers are failures."""
        headers = dict(request.headers)
        data: bytes | None = None
        if request.upload is not None:
            upload = request.upload
            fields: list[tuple[str, Any]] = list(upload.fields.items())
            fields.append((upload.file_field, upload.file_tuple()))
            data, headers["Content-Type"] = encode_multipart_formdata(fields)
        elif request.json is not None:
            data = orjson.dumps(request.json)
            headers["Content-Type"] = "application/json"
        with self.client.request(
            request.method,
            self.settings.origin_url + request.path,
            name=request.name,
            # locust annotates data as str | dict, but sends bytes as they are (its docstring
            # says "String/bytes"); the body is bytes (JSON or multipart), kept as it is.
            data=data,  # type: ignore[arg-type]
            headers=headers,
            catch_response=True,
        ) as response:
            status = int(response.status_code or 0)
            answer = answer_of(status, response.content, response.headers)
            TALLY.add(counters.ORIGIN_REQUESTS)
            wrong = bool(request.expect) and status not in request.expect
            if status >= 500 or status == 0 or wrong:
                if status >= 500 or status == 0:
                    TALLY.add(counters.ORIGIN_5XX)
                response.failure(f"origin {status} {answer.error_code or ''}".strip())
            else:
                response.success()
        return answer

    def send(self, request: Request, judge: Judge | None = None) -> Answer:
        if request.target == QUEUE:
            return self.call_queue(request, judge)
        return self.call_origin(request)

    def identity(self, registrant: Registrant) -> dict[str, str] | None:
        """Who joins: the registrant id, or, in a wave with verified joins (the scenario
        says so), an enqueue token from signing in at the origin, fresh for every join."""
        if not self.settings.scenario.wave.verified_joins:
            return {"registrant": registrant.registrant_id}
        token = enqueue_token(
            self.call_origin(self.api.sign_in(registrant.email, registrant.phone))
        )
        return None if token is None else {"enqueue_token": token}

    def pause(self, seconds: float) -> None:
        """Sleep like a person would, compressed by --poll-cap-s for rehearsals."""
        gevent.sleep(max(0.0, min(seconds, self.settings.poll_cap_s)))


class Tallied(JourneyObserver):
    """What a registrant's journey adds to the verdict's counts; for one who opts in to
    call-backs, the mailbox its messages reach."""

    def __init__(self, lead_s: float) -> None:
        self.lead_s = lead_s
        self.eta_s: float | None = None
        """The ETA the queue showed last (was the person due a message at once?)."""
        self.mailbox: callbacks.Mailbox | None = None
        self.back_by_link = False

    def placed(self, view: TicketView, now: float, new_place: bool) -> None:
        self.eta_s = view.eta_s

    def polled(self, view: TicketView, now: float) -> None:
        self.eta_s = view.eta_s

    def admitted(self, token: str, now: float) -> None:
        TALLY.add(counters.ADMISSIONS_SEEN)
        if self.back_by_link:
            TALLY.add(counters.CALLBACK_ADMITTED)

    def registered(self, now: float) -> None:
        TALLY.add(counters.REGISTRATIONS_COMPLETED)
        if self.back_by_link:
            TALLY.add(counters.CALLBACK_REGISTERED)

    def completed(self, acknowledged: bool) -> None:
        if acknowledged:
            TALLY.add(counters.SESSIONS_COMPLETED)

    def opted_in(self, channel: str, kind: str, address: str, now: float) -> None:
        TALLY.add(counters.CALLBACK_OPTED_IN)
        if self.eta_s is not None and self.eta_s < self.lead_s:
            TALLY.add(counters.CALLBACK_DUE)
        self.mailbox = callbacks.expect(kind, address)

    def returned(self, in_time: bool | None, now: float) -> None:
        TALLY.add(counters.CALLBACK_RETURNED)
        self.back_by_link = True


class RegistrantUser(QueueUser):
    """One journey per task run, then the next registrant. Pacing inside a journey is the
    journey's; `wait_time` is the gap before the next person takes this slot (it also keeps a
    closed wave from being hammered)."""

    weight = 85
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        super().on_start()
        # the wave is open when the run starts (wave_setup): patience counts from each join
        scenario = self.settings.scenario
        # call-backs when the scenario has them: the master's gateway receives the messages
        self.journeys = JourneySettings.of(
            scenario,
            queued=True,
            wave=self.settings.wave,
            opens_at_s=0.0,
            callbacks=scenario.callbacks.enabled,
        )

    @task
    def register(self) -> None:
        registrant = population(self.environment)[next(_next_index)]
        observer = Tallied(self.journeys.callbacks.lead_s)
        journey = Journey(registrant, self.journeys, self.rng, observer)
        action = journey.begin(time.monotonic())
        while True:
            if isinstance(action, Pause) and action.until_notified:
                link = self.wait_for_call(observer.mailbox)
                now = time.monotonic()
                action = journey.resumed(now) if link is None else journey.notified(link, now)
            elif isinstance(action, Pause):
                self.pause(action.seconds)
                action = journey.resumed(time.monotonic())
            elif isinstance(action, Call):
                judge = position_never_worsens(journey) if action.request.name == STATUS else None
                answers = [self.send(action.request, judge) for _ in range(action.copies)]
                action = journey.answered(answers, time.monotonic())
            else:
                return

    def wait_for_call(self, mailbox: callbacks.Mailbox | None) -> str | None:
        """Away from the line until the message comes: its return link, or None when the run
        stops first (Locust kills a stopped user's task; with --stop-timeout it waits for the
        task, which must not wait on a call that will not come)."""
        if mailbox is None:
            return None
        while self._state != LOCUST_STATE_STOPPING:
            link = mailbox.wait(CALL_WAIT_SLICE_S)
            if link is not None:
                return link
        return None


def worse_position(answer: Answer, than: int | None) -> int | None:
    """The position the answer shows, when it is worse than `than` (counted for the verdict)."""
    view = answer.view
    if view is None or view.position is None or than is None or view.position <= than:
        return None
    TALLY.add(counters.POSITION_WORSENED)
    return view.position


def position_never_worsens(journey: Journey) -> Judge:
    """A status answer must not show a worse place than the journey's latest view."""
    before = journey.view.position if journey.view is not None else None

    def judge(answer: Answer) -> str | None:
        worse = worse_position(answer, before)
        return None if worse is None else f"position worsened from {before} to {worse}"

    return judge


class BotUser(QueueUser):
    """A scripted client: one account, join and status as fast as possible, never waiting for
    Retry-After. The queue answering 429 to most of this is the correct outcome."""

    weight = 5
    wait_time = between(0.02, 0.1)
    is_bot_traffic = True

    def on_start(self) -> None:
        super().on_start()
        # One account, as a joki operator has: a real person's data, signed in with when
        # the wave verifies joins.
        self.account = population(self.environment)[next(_next_index)]
        self.ticket: str | None = None

    @task(1)
    def hammer_join(self) -> None:
        identity = self.identity(self.account)
        if identity is None:
            return
        request = dataclasses.replace(self.api.join(identity), name=JOIN + " (bot)")
        view = self.call_queue(request).view
        if view is not None and view.ticket:
            self.ticket = view.ticket

    @task(3)
    def hammer_status(self) -> None:
        if self.ticket is None:
            return
        self.call_queue(dataclasses.replace(self.api.status(self.ticket), name=STATUS + " (bot)"))


class RefreshStormUser(QueueUser):
    """Someone who refreshes in bursts: waiting page, re-join, status, again and again. A
    refresh must give back the same ticket and never a worse place."""

    weight = 10
    wait_time = between(1.0, 4.0)

    def on_start(self) -> None:
        super().on_start()
        self.new_identity()

    def new_identity(self) -> None:
        self.registrant = population(self.environment)[next(_next_index)]
        self.ticket: str | None = None
        self.best_position: int | None = None

    @task
    def storm(self) -> None:
        for _ in range(self.rng.randint(3, 8)):
            self.refresh_once()
            gevent.sleep(self.rng.uniform(0.05, 0.3))

    def refresh_once(self) -> None:
        self.call_queue(self.api.page())

        def same_ticket(answer: Answer) -> str | None:
            view = answer.view
            if view is not None and self.ticket and view.ticket != self.ticket:
                return "a refresh gave a different ticket"
            return None

        identity = self.identity(self.registrant)
        if identity is None:
            return
        join = dataclasses.replace(self.api.join(identity), name=JOIN + " (refresh)")
        joined = self.call_queue(join, judge=same_ticket).view
        if joined is not None and self.ticket is None:
            self.ticket = joined.ticket
        if self.ticket is None:
            return

        def never_worse(answer: Answer) -> str | None:
            best = self.best_position
            worse = worse_position(answer, best)
            return None if worse is None else f"refresh worsened position {best} -> {worse}"

        status = dataclasses.replace(self.api.status(self.ticket), name=STATUS + " (refresh)")
        view = self.call_queue(status, judge=never_worse).view
        if view is None:
            return
        if view.position is not None:
            self.best_position = view.position
        if view.admitted and view.token:
            TALLY.add(counters.ADMISSIONS_SEEN)
            self.call_queue(self.api.complete(view.token))
            self.new_identity()
        elif view.state in (HolderState.EXPIRED, HolderState.CLOSED):
            self.new_identity()


class AdminUser(QueueUser):
    """The SRE on duty: watches the wave and changes admit_rate once, `--admin-change-after`
    seconds into the run, to `--admin-new-rate`. Needs `--admin-token`; idles without it."""

    fixed_count = 1
    wait_time = constant(1.0)

    def on_start(self) -> None:
        super().on_start()
        if not self.settings.admin_token:
            log.info("no --admin-token: the admin user has nothing to do")
        self.started = time.monotonic()
        self.changed = False

    def admin_request(self, method: str, name: str, **changes: Any) -> Request:
        return Request(
            QUEUE,
            method,
            f"/admin/v1/waves/{self.settings.wave}",
            name,
            headers={"Authorization": f"Bearer {self.settings.admin_token}"},
            expect=frozenset({200, 201, 204}),
            **changes,
        )

    @task
    def watch_and_steer(self) -> None:
        if not self.settings.admin_token:
            return  # idles (raising StopUser here would be logged as an error)
        due = time.monotonic() - self.started >= self.settings.admin_change_after_s
        if due and not self.changed:
            new_rate = self.settings.admin_new_rate

            def applied(answer: Answer) -> str | None:
                return None if answer.status != 200 else _rate_applied(answer.body, new_rate)

            request = self.admin_request(
                "PUT", ADMIN_WAVE + " (set admit_rate)", json={"admit_rate": new_rate}
            )
            answer = self.call_queue(request, judge=applied)
            self.changed = answer.status in (200, 201, 204)
            if self.changed:
                log.info("admin user set admit_rate of %s to %s", self.settings.wave, new_rate)
            return
        watch = self.admin_request("GET", ADMIN_WAVE)
        self.call_queue(dataclasses.replace(watch, expect=frozenset({200})))


def _rate_applied(body: Any, rate: float) -> str | None:
    wave = body.get("wave", body)
    configured = wave.get("admit_rate") if isinstance(wave, dict) else None
    if configured is None or abs(float(configured) - rate) < 1e-9:
        return None
    return f"admit_rate is {configured} after setting {rate}"
