"""The queue's use cases (join, status, leave, complete, wave info), between thin HTTP handlers
and the Redis scripts. Hot-path calls go through coalescers: one script call per wave per
Redis round trip, however many requests arrived meanwhile (batcher.py)."""

from __future__ import annotations

import collections
import functools
import logging
import os
import time
from typing import Any, NamedTuple, NotRequired, TypedDict
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from prometheus_client import Counter

from queue_service import metrics
from queue_service.admission import record_step
from queue_service.batcher import Coalescer
from queue_service.clock import Clock, SystemClock
from queue_service.errors import Conflict, NotFound, RateLimited, Unauthorized
from queue_service.ratelimit import Rule, limited_headers
from queue_service.registry import WaveRegistry, WaveRuntime
from queue_service.store import (
    JoinOutcome,
    JoinRequest,
    StatusOutcome,
    StatusRequest,
    Store,
    UnknownWave,
)
from queue_service.tickets import TicketCodec
from queue_service.tokens import InvalidAdmissionToken, TokenIssuer, TokenVerifier
from queue_service.waves import iso_utc

log = logging.getLogger(__name__)

MAX_REGISTRANT_LENGTH = 128
PREQUEUE_SCORE_BITS = 52  # exact in a Redis sorted-set score (a double)
PREQUEUE_SCORE_BYTES = 7
# join results as the gelombang_joins_total metric labels them
JOIN_RESULT_LABELS = {
    "rl_ip": "rate_limited",
    "rl_registrant": "rate_limited",
    "scheduled": "not_accepting",
    "closed": "not_accepting",
    "full": "not_accepting",
}


class TicketView(TypedDict):
    """What a ticket holder is told (the status answer, and the join answer with its ticket).
    A plain dict: it goes straight to the JSON encoder, nothing is built twice on the hot path."""

    wave: str
    state: str
    position: int | None
    ahead: int | None
    eta_s: int | None
    poll_after_ms: int
    token: NotRequired[str]
    redirect: NotRequired[str]


class JoinResult(NamedTuple):
    ticket: str
    created: bool
    view: TicketView


def prequeue_scores(count: int) -> list[int]:
    """Uniform random ranks for the pre-queue lottery, unpredictable to registrants: from the
    OS's CSPRNG, one read per batch rather than one system call per join."""
    raw = os.urandom(PREQUEUE_SCORE_BYTES * count)
    mask = (1 << PREQUEUE_SCORE_BITS) - 1
    return [
        int.from_bytes(raw[i : i + PREQUEUE_SCORE_BYTES], "big") & mask
        for i in range(0, len(raw), PREQUEUE_SCORE_BYTES)
    ]


def add_query(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), (name, value)]
    return urlunsplit(parts._replace(query=urlencode(query)))


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
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.codec = codec
        self.issuer = issuer
        self.verifier = verifier
        self.clock = clock or SystemClock()
        self._joins: Coalescer[str, JoinRequest, JoinOutcome] = Coalescer("join", self._flush_joins)
        self._statuses: Coalescer[str, StatusRequest, StatusOutcome] = Coalescer(
            "status", self._flush_statuses
        )

    async def _flush_joins(self, wave: str, requests: list[JoinRequest]) -> list[JoinOutcome]:
        runtime = await self.registry.get(wave)
        outcomes = await self.store.join(
            wave,
            requests,
            prequeue_scores(len(requests)),
            runtime.limits,
            runtime.pace_s,
        )
        # counted per batch, not per request: one increment per result seen
        for result, count in collections.Counter(o.result for o in outcomes).items():
            _joins(wave, JOIN_RESULT_LABELS.get(result, result)).inc(count)
        return outcomes

    async def _flush_statuses(
        self, wave: str, requests: list[StatusRequest]
    ) -> list[StatusOutcome]:
        runtime = await self.registry.get(wave)
        outcomes = await self.store.status(wave, requests, runtime.limits)
        # counted per batch, not per request: one increment per state seen
        answered = collections.Counter(
            o.state for o in outcomes if o.result == "ok" and o.state != "unknown"
        )
        for state, count in answered.items():
            _status_polls(wave, state).inc(count)
        return outcomes

    async def drain(self) -> None:
        await self._joins.drain()
        await self._statuses.drain()

    async def _unknown_wave(self, wave: str) -> NotFound:
        self.registry.forget(wave)
        return NotFound(f"There is no wave called {wave!r}.", code="unknown_wave")

    # -- public use cases ---------------------------------------------------------------

    async def join(self, wave: str, registrant: str, ip: str) -> JoinResult:
        runtime = await self.registry.get(wave)
        registrant_hash, bucket = self.codec.registrant_hash(wave, registrant)
        request = JoinRequest(registrant_hash, bucket, ip)
        try:
            outcome = await self._joins.submit(wave, request)
        except UnknownWave:
            raise await self._unknown_wave(wave) from None
        result = outcome.result
        if result in ("rl_ip", "rl_registrant"):
            rule_name = "join_per_ip" if result == "rl_ip" else "join_per_registrant"
            raise _rate_limited(rule_name, getattr(runtime.limits, rule_name), outcome.extra_ms)
        if result in ("scheduled", "closed", "full"):
            raise self._not_accepting(runtime, result, outcome.extra_ms)
        view = self._view(
            runtime, outcome.seq, outcome.state, outcome.ahead, outcome.extra_ms, registrant_hash
        )
        return JoinResult(self.codec.encode(wave, outcome.seq), result != "existing", view)

    def _not_accepting(self, runtime: WaveRuntime, result: str, retry_ms: int) -> Conflict:
        if result == "scheduled":
            opens = runtime.config.opens_at - runtime.config.prequeue_s
            return Conflict(
                "The wave is not open yet; come back at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(opens))}.",
                code="wave_not_open_yet",
                retry_after_s=max(1.0, retry_ms / 1000),
            )
        if result == "full":
            return Conflict("The wave has reached its quota.", code="wave_full")
        return Conflict("The wave is closed.", code="wave_closed")

    async def status(self, wave: str, ticket: str, ip: str) -> TicketView:
        runtime = await self.registry.get(wave)
        seq = self.codec.decode(wave, ticket)
        try:
            outcome = await self._statuses.submit(wave, StatusRequest(seq, ip))
        except UnknownWave:
            raise await self._unknown_wave(wave) from None
        if outcome.result != "ok":
            rule_name = "status_per_ip" if outcome.result == "rl_ip" else "status_per_ticket"
            raise _rate_limited(rule_name, getattr(runtime.limits, rule_name), outcome.extra_ms)
        if outcome.state == "unknown":
            raise Unauthorized("The ticket is not known in this wave.", code="unknown_ticket")
        return self._view(
            runtime, seq, outcome.state, outcome.ahead, outcome.extra_ms, outcome.registrant_hash
        )

    def _view(
        self,
        runtime: WaveRuntime,
        seq: int,
        state: str,
        ahead: int,
        admitted_ms: int,
        subject: str,
    ) -> TicketView:
        wave = runtime.config.id
        if state == "waiting":
            return {
                "wave": wave,
                "state": state,
                "position": ahead + 1,
                "ahead": ahead,
                "eta_s": runtime.eta_s(ahead),
                "poll_after_ms": runtime.poll_after_ms(ahead, self.clock.now()),
            }
        if state == "prequeue":
            now = self.clock.now()
            return {
                "wave": wave,
                "state": state,
                "position": None,
                "ahead": None,
                "eta_s": max(0, int(runtime.config.opens_at - now)),
                "poll_after_ms": runtime.poll_after_ms(-1, now),
            }
        if state == "admitted":
            admitted_at = admitted_ms / 1000
            token = self.issuer.issue(
                wave=wave,
                subject=subject,
                ticket=seq,
                admitted_at=admitted_at,
                expires_at=admitted_at + runtime.config.session_ttl_s,
            )
            return {
                "wave": wave,
                "state": state,
                "position": 0,
                "ahead": 0,
                "eta_s": 0,
                "poll_after_ms": 0,
                "token": token,
                "redirect": add_query(runtime.config.origin_url, "gelombang_token", token),
            }
        return {
            "wave": wave,
            "state": state,
            "position": None,
            "ahead": None,
            "eta_s": None,
            "poll_after_ms": 0,
        }

    async def leave(self, wave: str, ticket: str) -> None:
        await self.registry.get(wave)
        seq = self.codec.decode(wave, ticket)
        try:
            await self.store.leave(wave, seq)
        except UnknownWave:
            raise await self._unknown_wave(wave) from None

    async def complete(self, wave: str, token: str) -> None:
        await self.registry.get(wave)
        try:
            claims = self.verifier.verify(token, wave=wave)
        except InvalidAdmissionToken as exc:
            raise Unauthorized(f"Admission token refused: {exc}.", code="invalid_token") from None
        try:
            result = await self.store.complete(wave, claims.ticket)
        except UnknownWave:
            raise await self._unknown_wave(wave) from None
        if result == "completed":
            metrics.sessions_completed.labels(wave).inc()

    async def info(self, wave: str) -> dict[str, Any]:
        runtime = await self.registry.get(wave)
        config, counts = runtime.config, runtime.counts
        if counts is None:
            step = await self.store.admit(wave, max_admit=0)  # counts only
            await record_step(self.registry, wave, step)
            runtime = await self.registry.get(wave)
            counts = runtime.counts
        assert counts is not None
        waiting = counts.waiting + counts.prequeue
        return {
            "wave": config.id,
            "title": config.title,
            "state": counts.state,
            "opens_at": iso_utc(config.opens_at),
            "closes_at": iso_utc(config.closes_at),
            "prequeue_opens_at": iso_utc(config.opens_at - config.prequeue_s),
            "waiting": waiting,
            "admit_rate": config.admit_rate,
            "eta_new_arrival_s": runtime.eta_s(counts.waiting),
        }
