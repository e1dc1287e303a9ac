"""Locust user classes: who hits the waiting room during a rehearsal.

- `RegistrantUser`: a synthetic person from `simulator.registrants.Population` who joins, polls
  as `simulator.behaviour` says (honouring `poll_after_ms` and Retry-After, balking, reneging),
  follows the admission token to the origin, registers with `simulator.flow`, and completes.
- `BotUser`: a scripted client that hammers join and status as fast as it can and ignores
  Retry-After; the queue should refuse most of it (429).
- `RefreshStormUser`: a person who keeps hitting F5 (page, re-join, status in quick bursts);
  their ticket and place must survive every refresh.
- `AdminUser`: one SRE who changes the wave's admit_rate mid-test through the admin API.

All of them use `FastHttpUser` (geventhttpclient): the queue's hot paths are cheap, so the load
generator, not the service, would otherwise be the bottleneck. Dynamic URLs are grouped with
`name=` and every answer is judged with `catch_response=True`.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import orjson
from locust import FastHttpUser, between, constant, task
from urllib3 import encode_multipart_formdata

from loadtests import counters
from loadtests.answers import plain_headers, retry_after_s
from loadtests.options import LoadSettings
from loadtests.runtime import load_settings, population
from loadtests.tally import TALLY
from loadtests.targets import DEFAULT_HOST
from simulator import behaviour
from simulator.flow import STEPS, FlowContext, RequestSpec, Step, pick_photo
from simulator.registrants import Registrant

log = logging.getLogger("loadtests.users")

JOIN = "/api/v1/waves/[wave]/join"
STATUS = "/api/v1/waves/[wave]/status"
LEAVE = "/api/v1/waves/[wave]/leave"
COMPLETE = "/api/v1/waves/[wave]/complete"
PAGE = "/w/[wave]"
ADMIN_WAVE = "/admin/v1/waves/[wave]"

# A journey gives up on one origin step after this many tries (each spaced as behaviour says).
ORIGIN_STEP_ATTEMPTS = 4

Answer = tuple[int, dict[str, Any], dict[str, str]]
Judge = Callable[[int, dict[str, Any]], str | None]

_next_index = itertools.count()


def _json_body(content: bytes | None) -> dict[str, Any]:
    if not content:
        return {}
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(body: dict[str, Any]) -> str:
    error = body.get("error")
    return str(error.get("code")) if isinstance(error, dict) else ""


class QueueUser(FastHttpUser):
    """Shared plumbing: settings, an RNG, and one way to call the queue and judge the answer."""

    abstract = True
    host = DEFAULT_HOST  # loopback unless --host names another target
    # Counted as bot traffic in the verdict (share of requests the queue rate-limited).
    is_bot_traffic = False

    settings: LoadSettings
    rng: random.Random

    def on_start(self) -> None:
        self.settings = load_settings(self.environment)
        self.rng = random.Random()

    @property
    def wave_path(self) -> str:
        return f"/api/v1/waves/{self.settings.wave}"

    def call_queue(
        self,
        method: str,
        path: str,
        *,
        name: str,
        expect: Iterable[int],
        json: Any = None,
        headers: dict[str, str] | None = None,
        judge: Judge | None = None,
    ) -> Answer:
        """One queue request; `expect` are the statuses that are a correct answer here (a 429
        is correct for a bot, for instance). 5xx and lost answers are always failures."""
        with self.client.request(
            method, path, name=name, json=json, headers=headers, catch_response=True
        ) as response:
            status = int(response.status_code or 0)
            body = _json_body(response.content)
            answer_headers = plain_headers(response.headers)
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
            if status not in set(expect) or status >= 500 or status == 0:
                problem = f"unexpected {status} {_error_code(body)}".strip()
            elif judge is not None:
                problem = judge(status, body)
            if problem:
                response.failure(problem)
            else:
                response.success()
        return status, body, answer_headers

    def identity(self, registrant: Registrant) -> dict[str, str] | None:
        """Who joins: the registrant id, or, in a wave with verified joins (the scenario
        says so), an enqueue token from signing in at the origin, fresh for every join."""
        if not self.settings.scenario.wave.verified_joins:
            return {"registrant": registrant.registrant_id}
        with self.client.request(
            "POST",
            self.settings.origin_url + "/api/v1/sign-in",
            name="origin sign-in",
            json={"email": registrant.email, "phone": registrant.phone, "wave": self.settings.wave},
            catch_response=True,
        ) as response:
            body = _json_body(response.content)
            TALLY.add(counters.ORIGIN_REQUESTS)
            if not isinstance(body.get("enqueue_token"), str):
                response.failure(f"sign-in {response.status_code} {_error_code(body)}".strip())
                return None
            response.success()
        return {"enqueue_token": body["enqueue_token"]}

    def pause(self, seconds: float) -> None:
        """Sleep like a person would, compressed by --poll-cap-s for rehearsals."""
        gevent.sleep(max(0.0, min(seconds, self.settings.poll_cap_s)))


class RegistrantUser(QueueUser):
    """One journey per task run: join, wait, register at the origin, complete; then the next
    registrant. Pacing inside a journey comes from `simulator.behaviour`; `wait_time` is the gap
    before the next person takes this slot (it also keeps a closed wave from being hammered)."""

    weight = 85
    wait_time = between(0.2, 1.0)

    @task
    def register(self) -> None:
        scenario = self.settings.scenario
        params = scenario.behaviour
        registrant = population(self.environment)[next(_next_index)]
        ticket_answer = self.join(registrant, params)
        if ticket_answer is None:
            return
        ticket, first = ticket_answer
        if behaviour.balks(self.rng, registrant, first.get("state"), first.get("eta_s"), params):
            self.walk_away(ticket, params)
            return
        token = self.wait_for_admission(registrant, ticket, first, params)
        if token is None:
            return
        TALLY.add(counters.ADMISSIONS_SEEN)
        if behaviour.drops_out_in_flow(self.rng, params):
            return  # closes the tab: the session frees its slot when it expires
        self.register_at_origin(registrant, token, params)
        self.complete(token)

    # ---------------------------------------------------------------- queue side

    def join(
        self, registrant: Registrant, params: behaviour.BehaviourParams
    ) -> tuple[str, dict[str, Any]] | None:
        for attempt in itertools.count(1):
            identity = self.identity(registrant)
            if identity is None:
                return None  # the registration site would not sign this person in
            status, body, headers = self.call_queue(
                "POST",
                f"{self.wave_path}/join",
                name=JOIN,
                json=identity,
                expect=(200, 201, 409, 429),
            )
            if status in (200, 201) and body.get("ticket"):
                return str(body["ticket"]), body
            if status == 409 and _error_code(body) != "wave_not_open_yet":
                return None  # closed or full: nothing left to queue for
            retry_after = retry_after_s(headers)
            delay = behaviour.retry_delay_s(self.rng, registrant, attempt, params, retry_after)
            if delay is None:
                return None  # gave up
            self.pause(delay)
        return None

    def wait_for_admission(
        self,
        registrant: Registrant,
        ticket: str,
        first: dict[str, Any],
        params: behaviour.BehaviourParams,
    ) -> str | None:
        headers = {"X-Queue-Ticket": ticket}
        started = time.monotonic()
        last = first
        last_position = first.get("position")
        failures = 0

        def position_never_worsens(status: int, body: dict[str, Any]) -> str | None:
            position = body.get("position")
            if (
                isinstance(position, int)
                and isinstance(last_position, int)
                and position > last_position
            ):
                TALLY.add(counters.POSITION_WORSENED)
                return f"position worsened from {last_position} to {position}"
            return None

        while True:
            if first.get("state") == "admitted" and first.get("token"):
                return str(first["token"])
            poll_after_ms = last.get("poll_after_ms")
            self.pause(behaviour.poll_delay_s(self.rng, registrant, poll_after_ms, params))
            if behaviour.reneges(registrant, time.monotonic() - started):
                self.walk_away(ticket, params)
                return None
            status, body, answer_headers = self.call_queue(
                "GET",
                f"{self.wave_path}/status",
                name=STATUS,
                headers=headers,
                expect=(200, 429),
                judge=position_never_worsens,
            )
            if status == 200:
                failures = 0
                last = body
                if isinstance(body.get("position"), int):
                    last_position = body["position"]
                state = body.get("state")
                if state == "admitted" and body.get("token"):
                    return str(body["token"])
                if state in ("expired", "closed"):
                    return None
                continue
            if status == 429:
                self.pause(retry_after_s(answer_headers) or 1.0)
                continue
            failures += 1
            delay = behaviour.retry_delay_s(
                self.rng, registrant, failures, params, retry_after_s(answer_headers)
            )
            if delay is None:
                return None
            self.pause(delay)

    def walk_away(self, ticket: str, params: behaviour.BehaviourParams) -> None:
        if behaviour.abandons_silently(self.rng, params):
            return
        self.call_queue(
            "POST",
            f"{self.wave_path}/leave",
            name=LEAVE,
            headers={"X-Queue-Ticket": ticket},
            expect=(204, 401, 404),
        )

    def complete(self, token: str) -> None:
        status, _, _ = self.call_queue(
            "POST",
            f"{self.wave_path}/complete",
            name=COMPLETE,
            headers={"Authorization": f"Bearer {token}"},
            expect=(204,),
        )
        if status == 204:
            TALLY.add(counters.SESSIONS_COMPLETED)

    # ---------------------------------------------------------------- origin side

    def register_at_origin(
        self, registrant: Registrant, token: str, params: behaviour.BehaviourParams
    ) -> bool:
        ctx = FlowContext(registrant, photo=pick_photo(self.rng))
        for step in STEPS:
            if not self.origin_step(step, ctx, token, params):
                return False
        TALLY.add(counters.REGISTRATIONS_COMPLETED)
        return True

    def origin_step(
        self, step: Step, ctx: FlowContext, token: str, params: behaviour.BehaviourParams
    ) -> bool:
        for attempt in range(1, ORIGIN_STEP_ATTEMPTS + 1):
            status, body, headers = self.call_origin(step, step.build(ctx), token)
            if status in step.ok:
                step.remember(ctx, body)
                return True
            if status == 413 and step.name == "ktp":
                ctx.resize_photo()  # the person shrinks the photo and uploads again
                continue
            if 400 <= status < 500:
                return False  # a refusal (bad NIK, under age, OTP locked): the journey ends
            delay = behaviour.retry_delay_s(
                self.rng, ctx.registrant, attempt, params, retry_after_s(headers)
            )
            if delay is None:
                return False
            self.pause(delay)
        return False

    def call_origin(self, step: Step, spec: RequestSpec, token: str) -> Answer:
        headers = {"Authorization": f"Bearer {token}"}
        data: bytes | None = None
        if spec.upload is not None:
            fields: list[tuple[str, Any]] = list(spec.upload.fields.items())
            fields.extend(spec.upload.requests_files().items())
            data, headers["Content-Type"] = encode_multipart_formdata(fields)
        elif spec.json is not None:
            data = orjson.dumps(spec.json)
            headers["Content-Type"] = "application/json"
        with self.client.request(
            spec.method,
            self.settings.origin_url + spec.path,
            name=f"origin {step.name}",
            # locust annotates data as str | dict, but sends bytes as they are (its docstring
            # says "String/bytes"); the body is bytes (JSON or multipart), kept as it is.
            data=data,  # type: ignore[arg-type]
            headers=headers,
            catch_response=True,
        ) as response:
            status = int(response.status_code or 0)
            body = _json_body(response.content)
            answer_headers = plain_headers(response.headers)
            TALLY.add(counters.ORIGIN_REQUESTS)
            if status >= 500 or status == 0:
                TALLY.add(counters.ORIGIN_5XX)
                response.failure(f"origin {status} {_error_code(body)}".strip())
            else:
                # 4xx are the origin's business answers (bad NIK, photo too large, under age).
                response.success()
        return status, body, answer_headers


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
        status, body, _ = self.call_queue(
            "POST",
            f"{self.wave_path}/join",
            name=JOIN + " (bot)",
            json=identity,
            expect=(200, 201, 409, 429),
        )
        if status in (200, 201) and body.get("ticket"):
            self.ticket = str(body["ticket"])

    @task(3)
    def hammer_status(self) -> None:
        if self.ticket is None:
            return
        self.call_queue(
            "GET",
            f"{self.wave_path}/status",
            name=STATUS + " (bot)",
            headers={"X-Queue-Ticket": self.ticket},
            expect=(200, 429),
        )


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
        with self.client.request(
            "GET", f"/w/{self.settings.wave}", name=PAGE, catch_response=True
        ) as page:
            TALLY.add(counters.QUEUE_REQUESTS)
            page_status = int(page.status_code or 0)
            if page_status >= 500:
                TALLY.add(counters.QUEUE_5XX)
            if page_status == 200:
                page.success()
            else:
                page.failure(f"waiting page answered {page_status}")

        def same_ticket(status: int, body: dict[str, Any]) -> str | None:
            if status in (200, 201) and self.ticket and body.get("ticket") != self.ticket:
                return "a refresh gave a different ticket"
            return None

        identity = self.identity(self.registrant)
        if identity is None:
            return
        status, body, _ = self.call_queue(
            "POST",
            f"{self.wave_path}/join",
            name=JOIN + " (refresh)",
            json=identity,
            expect=(200, 201, 409, 429),
            judge=same_ticket,
        )
        if status in (200, 201) and self.ticket is None:
            self.ticket = str(body.get("ticket") or "") or None
        if self.ticket is None:
            return

        def never_worse(status: int, body: dict[str, Any]) -> str | None:
            position = body.get("position")
            best = self.best_position
            if isinstance(position, int) and best is not None and position > best:
                TALLY.add(counters.POSITION_WORSENED)
                return f"refresh worsened position {best} -> {position}"
            return None

        status, body, _ = self.call_queue(
            "GET",
            f"{self.wave_path}/status",
            name=STATUS + " (refresh)",
            headers={"X-Queue-Ticket": self.ticket},
            expect=(200, 429),
            judge=never_worse,
        )
        if status != 200:
            return
        if isinstance(body.get("position"), int):
            self.best_position = body["position"]
        if body.get("state") == "admitted" and body.get("token"):
            TALLY.add(counters.ADMISSIONS_SEEN)
            self.call_queue(
                "POST",
                f"{self.wave_path}/complete",
                name=COMPLETE,
                headers={"Authorization": f"Bearer {body['token']}"},
                expect=(204,),
            )
            self.new_identity()
        elif body.get("state") in ("expired", "closed"):
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

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.admin_token}"}

    @task
    def watch_and_steer(self) -> None:
        if not self.settings.admin_token:
            return  # idles (raising StopUser here would be logged as an error)
        path = f"/admin/v1/waves/{self.settings.wave}"
        due = time.monotonic() - self.started >= self.settings.admin_change_after_s
        if due and not self.changed:
            new_rate = self.settings.admin_new_rate

            def applied(status: int, body: dict[str, Any]) -> str | None:
                return None if status != 200 else _rate_applied(body, new_rate)

            status, _, _ = self.call_queue(
                "PUT",
                path,
                name=ADMIN_WAVE + " (set admit_rate)",
                json={"admit_rate": new_rate},
                headers=self.admin_headers,
                expect=(200, 201, 204),
                judge=applied,
            )
            self.changed = status in (200, 201, 204)
            if self.changed:
                log.info("admin user set admit_rate of %s to %s", self.settings.wave, new_rate)
            return
        self.call_queue("GET", path, name=ADMIN_WAVE, headers=self.admin_headers, expect=(200,))


def _rate_applied(body: dict[str, Any], rate: float) -> str | None:
    wave = body.get("wave", body)
    configured = wave.get("admit_rate") if isinstance(wave, dict) else None
    if configured is None or abs(float(configured) - rate) < 1e-9:
        return None
    return f"admit_rate is {configured} after setting {rate}"
