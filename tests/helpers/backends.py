"""One admission guarantee, one test body, every backend (limits' `tests/utils.py` pattern):
the queue service on a real Redis, and the offline model's queue (`simulator.model.queue`).

A test takes the `backend` fixture (tests/guarantees/conftest.py) and speaks to it as a
registrant and an operator would: create a wave, join, poll, leave, complete, step admission,
read the counts, move the manual clock. `RedisBackend` goes through the service's own routes
and admission step (`tests.helpers.support`); `ModelBackend` through the model's `ModelQueue`,
which takes every admission decision of a model run (`ModelWave` plays the service's part
around it: the deadlines a poll promises, a claim, a complete, a slot that lapses). So a
guarantee that breaks in either backend fails the one test that states it.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp.test_utils import TestClient

from queue_service import admission_policy, pacing
from queue_service.clock import ManualClock
from queue_service.http.appkeys import SERVICE
from queue_service.pacing import PaceEstimate, PacePrior
from queue_service.waves import WaveConfig, parse_wave
from simulator.model.queue import CLAIMED, IN_LINE, INF, OFFERED, Limits, ModelQueue
from tests.helpers.support import admin_view, admit, join, poll, put_wave, wave_body


@dataclass(frozen=True)
class Joined:
    status: int
    ticket: str | None = None
    seq: int | None = None
    state: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class Counts:
    state: str
    admitted: int
    active: int
    abandoned: int
    left: int
    completed: int
    expired: int


class AdmissionBackend(Protocol):
    name: str
    clock: ManualClock

    async def put_wave(self, wave: str, **fields: Any) -> None:
        """Create the wave: `tests.helpers.support.wave_body`'s fields, changed by name."""

    async def join(self, wave: str, registrant: str) -> Joined: ...
    async def poll(self, wave: str, ticket: str) -> str:
        """The ticket's state now; an admission is claimed by the poll that sees it."""

    async def leave(self, wave: str, ticket: str) -> None: ...
    async def complete(self, wave: str, ticket: str) -> int:
        """The session of an admitted ticket ends (its holder polled it admitted): 204."""

    async def admit(self, wave: str) -> list[int]:
        """One admission step: the seqs admitted."""

    async def counts(self, wave: str) -> Counts: ...


# ----------------------------------------------------------------------------- Redis


class RedisBackend:
    name = "redis"

    def __init__(self, client: TestClient, clock: ManualClock) -> None:
        self.client, self.clock = client, clock
        self.tokens: dict[str, str] = {}

    async def put_wave(self, wave: str, **fields: Any) -> None:
        await put_wave(self.client, wave, **fields)

    async def join(self, wave: str, registrant: str) -> Joined:
        status, body = await join(self.client, wave, registrant)
        error = body.get("error", {}).get("code") if isinstance(body.get("error"), dict) else None
        ticket = body.get("ticket")
        seq = int(ticket.split(".")[0]) if ticket else None
        return Joined(status, ticket, seq, body.get("state"), error)

    async def poll(self, wave: str, ticket: str) -> str:
        status, body = await poll(self.client, wave, ticket)
        assert status == 200, body
        if body.get("token"):
            self.tokens[ticket] = body["token"]
        state: str = body["state"]
        return state

    async def leave(self, wave: str, ticket: str) -> None:
        path = f"/api/v1/waves/{wave}/leave"
        response = await self.client.post(path, headers={"X-Queue-Ticket": ticket})
        assert response.status == 204

    async def complete(self, wave: str, ticket: str) -> int:
        headers = {"Authorization": f"Bearer {self.tokens[ticket]}"}
        response = await self.client.post(f"/api/v1/waves/{wave}/complete", headers=headers)
        return response.status

    async def admit(self, wave: str) -> list[int]:
        await self.client.app[SERVICE].seen.flush()  # as the service's flush task does
        return [a.seq for a in (await admit(self.client, wave)).admitted]

    async def counts(self, wave: str) -> Counts:
        view = await admin_view(self.client, wave)
        c = view["counts"]
        return Counts(
            view["state"], c["admitted"], c["active"], c["abandoned"], c.get("left", 0),
            c["completed"], c["expired"],
        )  # fmt: skip


# ----------------------------------------------------------------------------- the model


class ModelWave:
    """One wave of the model's queue, with the service's part around it: the deadline each
    answer promises, claims, completes and slots that lapse, on the backend's clock."""

    def __init__(self, config: WaveConfig, seed: int) -> None:
        self.config = config
        self.rng = random.Random(seed)
        limits = Limits.of(config.admit_rate, config.effective_burst, config.max_active,
                           config.quota)  # fmt: skip
        self.queue = ModelQueue(
            limits,
            opens=config.opens_at,
            closes=config.closes_at,
            session_ttl_s=config.session_ttl_s,
            rng=self.rng,
        )
        self.pace = PaceEstimate(PacePrior(config.admit_rate, config.max_active,
                                           config.session_estimate_s))  # fmt: skip
        self.by_registrant: dict[str, int] = {}
        self.slots: list[tuple[float, int]] = []  # (until, ticket): when each slot lapses
        self.completed: set[int] = set()
        self.left = 0

    def step_to(self, t: float) -> None:
        """What the next script call does first: open the wave when due, free the slots
        whose time has come (sessions past their TTL, admissions unclaimed by the deadline)."""
        q = self.queue
        if not q.opened and t >= q.opens:
            q.open()
        while self.slots and self.slots[0][0] <= t:
            until, ticket = heapq.heappop(self.slots)
            if q.tickets.slot_until[ticket] == until:
                q.free_slot(ticket)

    def hold(self, ticket: int, until: float) -> None:
        self.queue.tickets.slot_until[ticket] = until
        heapq.heappush(self.slots, (until, ticket))

    def promise(self, t: float, ticket: int) -> None:
        """The poll deadline an answer gives a waiting holder (seen.lua: only ever later)."""
        q = self.queue
        if q.opened:
            eta = pacing.eta_s(q.ahead(ticket), self.pace.seconds_per_place)
            poll_ms = pacing.poll_after_ms(eta)
        else:
            size = len(q.prequeue_block)
            poll_ms = pacing.prequeue_poll_after_ms(q.opens - t, size, self.rng.random())
        deadline = admission_policy.poll_deadline(t, poll_ms / 1000, self.config.abandon_after_s)
        promised = q.tickets.skip_at[ticket]
        q.promise(ticket, deadline if promised == INF else max(promised, deadline))

    def state(self, t: float, ticket: int) -> str:
        q, tk = self.queue, self.queue.tickets
        phase = tk.state[ticket]
        if phase == IN_LINE:
            if t >= q.closes or q.full:
                return "closed"
            return "waiting" if q.opened else "prequeue"
        if phase in (OFFERED, CLAIMED):
            return "admitted"
        return "completed" if ticket in self.completed else "expired"


class ModelBackend:
    name = "model"

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.waves: dict[str, ModelWave] = {}

    async def put_wave(self, wave: str, **fields: Any) -> None:
        self.waves[wave] = ModelWave(parse_wave(wave, wave_body(**fields)), seed=len(self.waves))

    async def join(self, wave: str, registrant: str) -> Joined:
        w, t = self.waves[wave], self.clock.now()
        w.step_to(t)
        q = w.queue
        if t >= q.closes:
            return Joined(409, error_code="wave_closed")
        if q.full:
            return Joined(409, error_code="wave_full")
        if t < q.opens - w.config.prequeue_s:
            return Joined(409, error_code="wave_not_open_yet")
        ticket = w.by_registrant.get(registrant)
        created = ticket is None
        if ticket is None:
            ticket = w.by_registrant[registrant] = q.place(t, len(w.by_registrant), 0, 0.0)
        if w.state(t, ticket) in ("waiting", "prequeue"):
            w.promise(t, ticket)
        return Joined(201 if created else 200, str(ticket + 1), ticket + 1, w.state(t, ticket))

    async def poll(self, wave: str, ticket: str) -> str:
        w, t = self.waves[wave], self.clock.now()
        w.step_to(t)
        number = int(ticket) - 1
        tk = w.queue.tickets
        if tk.state[number] == OFFERED:  # the poll that sees it claims it: a session
            tk.state[number] = CLAIMED
            w.hold(number, tk.admitted_at[number] + w.config.session_ttl_s)
        state = w.state(t, number)
        if state in ("waiting", "prequeue"):
            w.promise(t, number)
        return state

    async def leave(self, wave: str, ticket: str) -> None:
        w, t = self.waves[wave], self.clock.now()
        w.step_to(t)
        number = int(ticket) - 1
        w.queue.leave(t, number)
        w.left += 1

    async def complete(self, wave: str, ticket: str) -> int:
        w, t = self.waves[wave], self.clock.now()
        w.step_to(t)
        number = int(ticket) - 1
        if w.queue.tickets.state[number] == CLAIMED:
            w.queue.free_slot(number)
            w.completed.add(number)
        return 204

    async def admit(self, wave: str) -> list[int]:
        w, t = self.waves[wave], self.clock.now()
        w.step_to(t)
        q, admitted = w.queue, []
        while q.next_admission_at(t) <= t:
            ticket = q.admit_one(t)
            if ticket < 0:
                break
            w.hold(ticket, q.claim_window(t, ticket))
            admitted.append(ticket + 1)
        skipped = q.skipped
        w.pace.observe(t, q.admitted, skipped, q.waiting, q.active, q.ended, q.opened)
        return admitted

    async def counts(self, wave: str) -> Counts:
        w, t = self.waves[wave], self.clock.now()
        w.step_to(t)
        q = w.queue
        state = (
            "closed" if t >= q.closes
            else "full" if q.full
            else "open" if q.opened
            else "prequeue"
        )  # fmt: skip
        return Counts(state, q.admitted, q.active, q.abandoned, w.left, len(w.completed),
                      q.ended - len(w.completed))  # fmt: skip
