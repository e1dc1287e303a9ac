"""The queue's use cases (join, status, leave, complete, wave info), between thin HTTP handlers
and the Redis scripts.

Joins and the status polls that need Redis go through coalescers: one script call per wave per
Redis round trip, however many requests arrived meanwhile (batcher.py). Most status polls need
none: a waiting ticket is answered from the process's copy of the wave (local_status.py), and
the poll deadline it is given is written later in a batch (seen_buffer.py).
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import time
from typing import Any, NamedTuple

from prometheus_client import Counter

from queue_service import metrics, pacing
from queue_service.batcher import Coalescer
from queue_service.callbacks import Callbacks
from queue_service.clock import Clock, SystemClock
from queue_service.contacts import parse_contact, parse_language
from queue_service.enqueue import EnqueueVerifier, VerifiedAccount
from queue_service.errors import (
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
)
from queue_service.identity import canonical_registrant, signed_account
from queue_service.local_status import answer_locally
from queue_service.net import rate_limit_key
from queue_service.proof import DrawCache
from queue_service.proof_of_work import ChallengeCodec
from queue_service.protocol import JoinResult, TicketState, WaveState
from queue_service.ratelimit import Rule, limited_headers
from queue_service.ratelimit_local import LocalGcra
from queue_service.registry import WaveRegistry, WaveRuntime
from queue_service.seen_buffer import SeenBuffer
from queue_service.store import (
    REVOKED_PAGE,
    JoinBatch,
    JoinOutcome,
    JoinRequest,
    StatusBatch,
    StatusOutcome,
    StatusRequest,
    Store,
    WaveCounts,
)
from queue_service.tickets import Ticket, TicketCodec, new_stamps
from queue_service.tokens import InvalidAdmissionToken, TokenIssuer, TokenVerifier, token_id
from queue_service.views import (
    TicketView,
    admitted_view,
    final_view,
    prequeue_view,
    waiting_view,
)
from queue_service.waves import iso_utc

log = logging.getLogger(__name__)

PREQUEUE_SCORE_BITS = 52  # exact in a Redis sorted-set score (a double)
PREQUEUE_SCORE_BYTES = 7
FEED_SEQ_MAX = 999_999_999_999_999
"""Above any sequence number within one millisecond of the revocations stream."""
CLIENT_BACKOFF_CAP_MS = 60_000
"""Longest a waiting page waits between retries after errors: a poll refused by a rate limit
or the state store is given this long (plus the grace) before it counts as missed."""
# join results as the gelombang_joins_total metric labels them
JOIN_RESULT_LABELS = {
    JoinResult.NEW: "new",
    JoinResult.EXISTING: "existing",
    JoinResult.REJOINED: "rejoined",
    JoinResult.HELD: "held",
    JoinResult.RL_IP: "rate_limited",
    JoinResult.RL_REGISTRANT: "rate_limited",
    JoinResult.SCHEDULED: "not_accepting",
    JoinResult.CLOSED: "not_accepting",
    JoinResult.FULL: "not_accepting",
}
CALLABLE_STATES = frozenset({"prequeue", "waiting", "closing", "paused"})
"""A place in one of these may be called back (callbacks.py)."""
ALL_VERIFIED = {"phone": "+620000000000", "email": "checked@later.invalid"}
"""Stands in for a join's verified contacts before its enqueue token is checked."""


class JoinResponse(NamedTuple):
    ticket: str
    created: bool
    view: TicketView
    callback: dict[str, Any] | None = None
    """Call-backs: what the holder opted in to, when the join asked for it (callbacks.py)."""


class JoinedTicket(NamedTuple):
    """One request's share of a join batch."""

    batch: JoinBatch
    outcome: JoinOutcome


class StatusAnswer(NamedTuple):
    """One request's share of a status batch."""

    wave_state: WaveState
    cursor: int
    outcome: StatusOutcome


def prequeue_scores(count: int) -> list[int]:
    """Uniform random ranks for the pre-queue lottery, unpredictable to registrants: from the
    OS's CSPRNG, one read per batch rather than one system call per join."""
    raw = os.urandom(PREQUEUE_SCORE_BYTES * count)
    mask = (1 << PREQUEUE_SCORE_BITS) - 1
    return [
        int.from_bytes(raw[i : i + PREQUEUE_SCORE_BYTES], "big") & mask
        for i in range(0, len(raw), PREQUEUE_SCORE_BYTES)
    ]


@functools.lru_cache(maxsize=4096)
def _status_polls(wave: str, state: str) -> Counter:
    """Labelled children looked up once: `labels()` on every request showed in the profile."""
    return metrics.status_polls.labels(wave, state)


@functools.lru_cache(maxsize=4096)
def _joins(wave: str, result: str) -> Counter:
    return metrics.joins.labels(wave, result)


def _rate_limited(rule_name: str, rule: Rule, retry_ms: int) -> RateLimited:
    metrics.rate_limited.labels(rule_name).inc()
    headers = limited_headers(rule_name, rule, retry_ms)
    return RateLimited(
        "Too many requests; wait before trying again.",
        retry_after_s=float(headers["Retry-After"]),
        headers=headers,
    )


class QueueService:
    def __init__(
        self,
        store: Store,
        registry: WaveRegistry,
        codec: TicketCodec,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        challenges: ChallengeCodec,
        *,
        clock: Clock | None = None,
        local_status_max_age_s: float = 1.0,
        callbacks: Callbacks | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.codec = codec
        self.issuer = issuer
        self.verifier = verifier
        self.challenges = challenges
        self.clock = clock or SystemClock()
        self.seen = SeenBuffer(store)
        self.draws = DrawCache(store)
        """The pre-queue draw's commitment and seed, as the wave info shows them."""
        self.enqueue = EnqueueVerifier(self.clock)
        self.callbacks = callbacks
        """Call-backs (callbacks.py); None: this service calls nobody back."""
        self._local_max_age_s = local_status_max_age_s
        self._joins: Coalescer[str, JoinRequest, JoinedTicket] = Coalescer(
            "join", self._flush_joins
        )
        self._statuses: Coalescer[str, StatusRequest, StatusAnswer] = Coalescer(
            "status", self._flush_statuses
        )
        # joins to waves that do not exist, per client address (they touch no Redis: the
        # registry knows every wave id; this keeps a client from spinning on them at all)
        self._unknown_joins = LocalGcra(registry.base_limits.join_per_ip)

    async def _flush_joins(self, wave: str, requests: list[JoinRequest]) -> list[JoinedTicket]:
        runtime = await self.registry.get(wave)
        batch = await self.store.join(
            wave,
            requests,
            prequeue_scores(len(requests)),
            new_stamps(len(requests)),
            runtime.limits,
            runtime.pace_s,
            runtime.high_water,
        )
        runtime.learn_issued(batch.incarnation, batch.seq)
        if batch.began == "rollback":
            metrics.state_rollbacks.labels(wave).inc()
            log.warning("wave %s: a join found Redis rolled back in place; new incarnation", wave)
        # counted per batch, not per request: one increment per result seen
        for result, count in collections.Counter(o.result for o in batch.outcomes).items():
            _joins(wave, JOIN_RESULT_LABELS[result]).inc(count)
        return [JoinedTicket(batch, outcome) for outcome in batch.outcomes]

    async def _flush_statuses(self, wave: str, requests: list[StatusRequest]) -> list[StatusAnswer]:
        batch: StatusBatch = await self.store.status(wave, requests)
        return [StatusAnswer(batch.wave_state, batch.cursor, o) for o in batch.outcomes]

    async def drain(self) -> None:
        await self._joins.drain()
        await self._statuses.drain()
        await self.seen.flush()

    # -- join ---------------------------------------------------------------------------

    async def join(
        self, wave: str, body: dict[str, Any], ip: str, presented_ticket: str | None
    ) -> JoinResponse:
        """`body`: {"registrant": id} or {"enqueue_token": JWT}, and "pow" when the wave asks
        for it. `presented_ticket`: the caller's ticket (cookie or header), its proof of
        holding a place it already has."""
        runtime = await self._joinable(wave, ip)
        config = runtime.config
        wants_callback = body.get("contact") is not None
        if wants_callback:
            self._check_callback_request(runtime, body)  # refused before a place is taken
        verified = await self._verified(runtime, body)
        if config.pow_bits:
            raw_identity = (
                body["enqueue_token"] if "enqueue_token" in body else body.get("registrant")
            )
            self.challenges.check(
                wave, config.pow_bits, body.get("pow"), str(raw_identity), self.clock.now()
            )
        if verified is not None:
            registrant = signed_account(verified.account, config.id_kind)
            ttl_ms = max(1, int(verified.valid_for_s * 1000))
            proof = f"verified:{verified.token_key}:{ttl_ms}"
        else:
            registrant = canonical_registrant(body.get("registrant"), config.id_kind)
            proof = self._ticket_proof(runtime, presented_ticket)
        registrant_hash, bucket = self.codec.registrant_hash(wave, registrant)
        request = JoinRequest(registrant_hash, bucket, rate_limit_key(ip), proof)
        joined = await self._joins.submit(wave, request)
        outcome = joined.outcome
        result = outcome.result
        if result in (JoinResult.NEW, JoinResult.REJOINED):
            self.registry.wake(wave)  # somebody waits: admission steps this wave at full pace
        if result in (JoinResult.RL_IP, JoinResult.RL_REGISTRANT):
            rule_name = "join_per_ip" if result == JoinResult.RL_IP else "join_per_registrant"
            raise _rate_limited(rule_name, getattr(runtime.limits, rule_name), outcome.extra_ms)
        if result in (JoinResult.SCHEDULED, JoinResult.CLOSED, JoinResult.FULL):
            raise self._not_accepting(runtime, result, outcome.extra_ms)
        if result == JoinResult.HELD:
            raise self._held(outcome.state)
        ticket = Ticket(outcome.seq, joined.batch.incarnation_of(outcome.seq), outcome.stamp)
        text = self.codec.encode(wave, runtime.uid, ticket)
        if result == JoinResult.EXISTING and outcome.state == TicketState.ADMITTED:
            # the holder's own admission: claimed and its token issued by the status path
            return JoinResponse(text, False, await self._status_from_redis(runtime, ticket))
        assert outcome.state is not None
        view = self._view(runtime, ticket, outcome.state, outcome.ahead, 0, "")
        callback = None
        if wants_callback and self.callbacks is not None and view["state"] in CALLABLE_STATES:
            contacts = verified.contacts if verified is not None else {}
            try:
                opted = await self.callbacks.opt_in(runtime, ticket, body, contacts)
                callback = opted.view["callback"]
            except ApiError as exc:
                # the place is taken and stays: the holder is told why nobody will call, and
                # may opt in again (POST .../notify) rather than lose the join
                callback = {"error": {"code": exc.code, "message": exc.message}}
        if verified is not None and config.notify.carry_over_to and self.callbacks is not None:
            await self.callbacks.keep_account(runtime, ticket, verified.account)
        return JoinResponse(text, result != JoinResult.EXISTING, view, callback)

    def _check_callback_request(self, runtime: WaveRuntime, body: dict[str, Any]) -> None:
        """A join that asks for call-backs is checked before it takes a place: a wave without
        them, or a contact that cannot be used, is refused with the reason."""
        notify = runtime.config.notify
        if self.callbacks is None or not notify.enabled:
            raise Conflict(
                "This wave does not call people back: keep the waiting page open.",
                code="callbacks_off",
            )
        # the verified contacts are known only after the token's check: accept a missing
        # address here, the opt-in checks it again with them
        contact = body.get("contact")
        verified_later = runtime.config.verified_joins and "enqueue_token" in body
        if verified_later and isinstance(contact, dict) and not contact.get("address"):
            parse_contact({"kind": contact.get("kind")}, notify.channels, ALL_VERIFIED)
        else:
            parse_contact(contact, notify.channels, {})
        parse_language(body.get("language"))

    async def _joinable(self, wave: str, ip: str) -> WaveRuntime:
        """The wave to join; for a wave that does not exist, 404, or 429 to a client that keeps
        asking (the deployment's per-address join rule, counted in this process)."""
        try:
            return await self.registry.get(wave)
        except NotFound:
            if self.registry.base_limits.enabled:
                key, now = rate_limit_key(ip), self.clock.now()
                retry_s = self._unknown_joins.retry_after(key, now)
                if retry_s:
                    rule = self.registry.base_limits.join_per_ip
                    raise _rate_limited("join_per_ip", rule, int(retry_s * 1000)) from None
                self._unknown_joins.charge(key, now)
            raise

    async def _verified(self, runtime: WaveRuntime, body: dict[str, Any]) -> VerifiedAccount | None:
        """The registration site's account of a verified join, or None for a bare id. A wave
        takes one kind of join, never both (waves.py)."""
        config = runtime.config
        if "enqueue_token" in body:
            if not config.verified_joins:
                raise BadRequest(
                    "This wave takes no enqueue tokens; join with a registrant id.",
                    code="enqueue_token_not_accepted",
                )
            return await self.enqueue.account(body["enqueue_token"], config)
        if config.verified_joins:
            raise Unauthorized(
                "This wave admits only people signed in at the registration site: open the "
                "queue from the registration site's link.",
                code="enqueue_token_required",
            )
        return None

    def _ticket_proof(self, runtime: WaveRuntime, presented: str | None) -> str:
        if not presented:
            return ""
        try:
            ticket = self.codec.check(runtime.config.id, runtime.uid, presented)
        except ApiError:
            return ""  # a stale or foreign cookie proves nothing, and refuses nothing
        return f"{ticket.seq}.{ticket.incarnation}.{ticket.stamp}"

    @staticmethod
    def _held(state: TicketState | None) -> Conflict:
        """A join without proof for an id that holds a place. The answer is the same whatever
        that place's state (waiting, admitted, registered): knowing an id (a leaked NIK) tells
        no more than that it is in use in this wave (docs/threat-model.md)."""
        if state == TicketState.CLOSED:
            return Conflict("The wave is closed.", code="wave_closed")
        return Conflict(
            "This registrant already has a place or a registration in this wave, in another "
            "browser or on another device: continue there. Signing in at the registration "
            "site proves it is you on this one.",
            code="already_queued",
        )

    def _not_accepting(self, runtime: WaveRuntime, result: JoinResult, retry_ms: int) -> Conflict:
        if result == JoinResult.SCHEDULED:
            opens = runtime.config.opens_at - runtime.config.prequeue_s
            return Conflict(
                f"The wave is not open yet; come back at {iso_utc(opens)}.",
                code="wave_not_open_yet",
                retry_after_s=max(1.0, retry_ms / 1000),
            )
        if result == JoinResult.FULL:
            return Conflict("The wave has reached its quota.", code="wave_full")
        return Conflict("The wave is closed.", code="wave_closed")

    # -- status -------------------------------------------------------------------------

    async def status(self, wave: str, ticket_text: str, ip: str) -> TicketView:
        runtime = await self.registry.get(wave)
        ticket = self.codec.decode(wave, runtime.uid, ticket_text)
        now = self.clock.now()
        if runtime.limits.enabled:
            self._check_status_limits(runtime, ticket, rate_limit_key(ip), now)
        local = answer_locally(runtime, ticket, now, self._local_max_age_s)
        if local is None:
            return await self._status_from_redis(runtime, ticket)
        if local.state == TicketState.PREQUEUE:
            view = prequeue_view(runtime, now)
        else:
            view = waiting_view(runtime, local.ahead, now)
        self._promise(runtime, ticket.seq, view["poll_after_ms"], now)
        _status_polls(wave, view["state"]).inc()
        return view

    def _check_status_limits(
        self, runtime: WaveRuntime, ticket: Ticket, ip_key: str, now: float
    ) -> None:
        """Per ticket first, then per address. A poll refused only by the address rule still
        counts as seen: a bot sharing a carrier's address cannot get its neighbours' places
        skipped by spending the address's allowance."""
        limiters, rules = runtime.status_limiters, runtime.limits
        retry = limiters.per_ticket.retry_after(ticket.seq, now)
        if retry:
            raise _rate_limited("status_per_ticket", rules.status_per_ticket, int(retry * 1000))
        retry = limiters.per_ip.retry_after(ip_key, now)
        if retry:
            limiters.per_ticket.charge(ticket.seq, now)
            self._promise(runtime, ticket.seq, int(retry * 1000) + CLIENT_BACKOFF_CAP_MS, now)
            raise _rate_limited("status_per_ip", rules.status_per_ip, int(retry * 1000))
        limiters.per_ticket.charge(ticket.seq, now)
        limiters.per_ip.charge(ip_key, now)

    def _promise(self, runtime: WaveRuntime, seq: int, poll_ms: int, now: float) -> None:
        """Record the deadline a waiting holder was just given (written in batches)."""
        grace_ms = int(runtime.config.abandon_after_s * 1000)
        deadline = pacing.poll_deadline_ms(runtime.service_now_ms(now), poll_ms, grace_ms)
        self.seen.record(runtime.config.id, seq, deadline)

    async def _status_from_redis(self, runtime: WaveRuntime, ticket: Ticket) -> TicketView:
        wave = runtime.config.id
        try:
            answer = await self._statuses.submit(wave, StatusRequest(*ticket))
        except StoreUnavailable:
            # the holder is here even if Redis is not: keep the place (written when it returns)
            self._promise(runtime, ticket.seq, CLIENT_BACKOFF_CAP_MS, self.clock.now())
            raise
        outcome = answer.outcome
        state = outcome.state
        if state == TicketState.LOST:
            raise Unauthorized(
                "This ticket was issued just before the queue's data store failed, and its "
                "place could not be kept: please join again.",
                code="ticket_lost",
            )
        if state == TicketState.UNKNOWN:
            raise Unauthorized("The ticket is not known in this wave.", code="unknown_ticket")
        if runtime.counts is None or runtime.incarnation == ticket.incarnation:
            runtime.cursor = max(runtime.cursor, answer.cursor)
        counts = runtime.counts
        if state == TicketState.WAITING and counts is not None and ticket.seq <= counts.open_seq:
            runtime.remember_rank(ticket.seq, outcome.order)
        view = self._view(
            runtime,
            ticket,
            state,
            outcome.order - answer.cursor,
            outcome.admitted_ms,
            outcome.registrant_hash,
            paused=answer.wave_state == WaveState.PAUSED,
        )
        _status_polls(wave, view["state"]).inc()
        return view

    def _view(
        self,
        runtime: WaveRuntime,
        ticket: Ticket,
        state: TicketState,
        ahead: int,
        admitted_ms: int,
        subject: str,
        *,
        paused: bool | None = None,
    ) -> TicketView:
        """`paused`: the wave's state as the answer's script saw it (None: the process's copy)."""
        now = self.clock.now()
        if state == TicketState.WAITING:
            view = waiting_view(runtime, max(0, ahead), now, paused=paused)
        elif state == TicketState.PREQUEUE:
            view = prequeue_view(runtime, now)
        elif state == TicketState.ADMITTED:
            return admitted_view(runtime, self._token(runtime, ticket, admitted_ms, subject))
        else:
            return final_view(runtime, state)
        self._promise(runtime, ticket.seq, view["poll_after_ms"], now)
        return view

    def _token(self, runtime: WaveRuntime, ticket: Ticket, admitted_ms: int, subject: str) -> str:
        config = runtime.config
        admitted_at = admitted_ms / 1000
        return self.issuer.issue(
            wave=config.id,
            subject=subject,
            ticket=ticket.seq,
            incarnation=ticket.incarnation,
            stamp=ticket.stamp,
            admitted_at=admitted_at,
            expires_at=admitted_at + config.session_ttl_s,
            one_time=config.one_time_tokens,
        )

    # -- session ends -------------------------------------------------------------------

    async def leave(self, wave: str, ticket_text: str) -> None:
        runtime = await self.registry.get(wave)
        ticket = self.codec.check(wave, runtime.uid, ticket_text)
        jti = token_id(wave, ticket.incarnation, ticket.seq, ticket.stamp)
        result = await self.store.leave(wave, ticket, jti)
        if result == "left":
            # this process stops answering it as waiting at once
            open_seq = runtime.counts.open_seq if runtime.counts else -1
            runtime.left.add(ticket.seq, open_seq)
        elif result == "ended":
            metrics.sessions_completed.labels(wave).inc()

    async def complete(self, wave: str, token: str) -> None:
        await self.registry.get(wave)
        try:
            claims = self.verifier.verify(token, wave=wave)
        except InvalidAdmissionToken as exc:
            raise Unauthorized(f"Admission token refused: {exc}.", code="invalid_token") from None
        ticket = Ticket(claims.ticket, claims.incarnation, claims.stamp)
        result = await self.store.complete(wave, ticket, claims.token_id)
        if result == "completed":
            metrics.sessions_completed.labels(wave).inc()

    # -- wave information ---------------------------------------------------------------

    async def counts(self, runtime: WaveRuntime) -> WaveCounts:
        """The wave's counts: the admission loop's copy when fresh, else read (no writes)."""
        counts = runtime.counts
        if counts is not None and self.clock.now() - runtime.counts_at <= self._local_max_age_s:
            return counts
        return await self.store.read_counts(runtime.config.id)

    async def info(self, wave: str) -> dict[str, Any]:
        runtime = await self.registry.get(wave)
        config = runtime.config
        counts = await self.counts(runtime)
        return {
            "wave": config.id,
            "title": config.title,
            "state": counts.state,
            "opens_at": iso_utc(config.opens_at),
            "closes_at": iso_utc(config.closes_at),
            "prequeue_opens_at": iso_utc(config.opens_at - config.prequeue_s),
            "waiting": counts.waiting + counts.prequeue,
            "admit_rate": config.admit_rate,
            "eta_new_arrival_s": pacing.eta_s(counts.waiting, runtime.pace_s),
            "verified_joins": config.verified_joins,
            "pow_bits": config.pow_bits,
            "id_kind": config.id_kind,
            # public proof: the draw's commitment (its seed after the opening) and the ledger
            "draw": await self.draws.public(config.id, runtime.uid, counts.drawn),
            "ledger": f"/api/v1/waves/{config.id}/ledger",
            "callbacks": self._callback_info(runtime),
        }

    def _callback_info(self, runtime: WaveRuntime) -> dict[str, Any] | None:
        """What the waiting page needs to offer call-backs (None: the wave offers none)."""
        notify = runtime.config.notify
        if not notify.enabled or self.callbacks is None:
            return None
        return {
            "channels": list(notify.channels),
            "lead_s": notify.lead_s,
            "return_window_s": notify.return_window_s,
            "vapid_public_key": self.callbacks.vapid_public_key,
        }

    async def revoked(self, wave: str, after: str) -> dict[str, Any]:
        """One page of the tokens revoked after feed position `after` ('<ms>-<n>', exclusive),
        or from millisecond '<ms>' on (inclusive: `after_ms`, which may repeat a few)."""
        await self.registry.get(wave)
        entries = await self.store.revoked_after(wave, after)
        next_after, next_after_ms = after, int(after.partition("-")[0])
        if entries:
            next_after = entries[-1][0]
            next_after_ms = int(next_after.partition("-")[0])
        elif "-" not in after:
            # a bare millisecond (after_ms, inclusive) with nothing from it on: the feed position
            # just before it, so the next read misses nothing (a position, as documented)
            next_after = f"{next_after_ms - 1}-{FEED_SEQ_MAX}" if next_after_ms else "0-0"
        return {
            "wave": wave,
            "revoked": [jti for _, jti in entries],
            "next_after": next_after,
            "next_after_ms": next_after_ms,
            "more": len(entries) >= REVOKED_PAGE,
            "as_of_ms": int(time.time() * 1000),
        }

    async def challenge(self, wave: str) -> dict[str, Any]:
        runtime = await self.registry.get(wave)
        bits = runtime.config.pow_bits
        if not bits:
            return {"challenge": None, "bits": 0, "expires_in_s": 0}
        return self.challenges.issue(wave, bits, self.clock.now())
