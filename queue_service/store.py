"""Redis access: the Lua scripts, registered once, called with explicit KEYS and ARGV.

Every call is bounded in time; any Redis failure becomes `StoreUnavailable` (503) here, once.
Replies are decoded with the codes of `protocol.py`, the same tables the scripts are built with.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NamedTuple

import orjson
from prometheus_client import Histogram
from redis.commands.core import AsyncScript
from redis.exceptions import RedisClusterException, RedisError

from queue_service import draw, metrics
from queue_service.clock import Clock
from queue_service.errors import StoreUnavailable, UnknownWave
from queue_service.keys import SECRET_KEY, WAVES_KEY, WaveKeys
from queue_service.protocol import (
    JOIN_RESULTS,
    TICKET_STATES,
    JoinResult,
    TicketState,
    WaveState,
    lua_prelude,
)
from queue_service.ratelimit import RateLimitRules
from queue_service.redis_client import RedisClient
from queue_service.tickets import Ticket
from queue_service.waves import WaveConfig

log = logging.getLogger(__name__)

SCRIPTS = (
    "join",
    "status",
    "seen",
    "admit",
    "read_counts",
    "leave",
    "complete",
    "put_wave",
    "control",
    "autopilot",
    "draw",
    "ledger_seal",
    "optin",
    "notify",
    "return_link",
    "outbox",
    "carry",
)
READ_ONLY_SCRIPTS = frozenset({"read_counts"})
STORE_RETRY_AFTER_S = 2
INCARNATION_ID_BYTES = 6
"""Random bytes of an incarnation id (8 url-safe characters in every ticket)."""
REVOKED_PAGE = 1000
OUTBOX_GROUP = "senders"
"""The consumer group every process's sender reads the outbox with (outbox.py)."""
DEAD_LETTERS_KEPT = 10_000


def _script_source(name: str) -> str:
    package = resources.files("queue_service") / "lua"
    body = lua_prelude() + (package / "_lib.lua").read_text() + "\n"
    body += (package / f"{name}.lua").read_text()
    # Redis 7 script flags: a no-writes script is refused any write, and may run on a replica.
    return ("#!lua flags=no-writes\n" + body) if name in READ_ONLY_SCRIPTS else body


def new_incarnation_id() -> str:
    return secrets.token_urlsafe(INCARNATION_ID_BYTES)


class HighWater(NamedTuple):
    """The highest seq a process has seen a wave's current incarnation issue."""

    incarnation: str = ""
    seq: int = 0


# Batches go to the hot-path scripts as comma-joined lists: no item can hold a comma (client
# addresses come from a peer address or an X-Forwarded-For hop, which is split on commas;
# registrant hashes and incarnation ids are url-safe base64), and the scripts refuse a batch
# whose lists differ in length rather than answer anyone with someone else's result.


class JoinRequest(NamedTuple):
    registrant_hash: str
    bucket: int
    ip: str
    proof: str
    """The caller's own valid ticket as '<seq>.<incarnation>.<stamp>', a verified enqueue
    token as 'verified:<token key>:<ttl ms>' (it proves once), '' for none (lua/join.lua)."""


class JoinOutcome(NamedTuple):
    result: JoinResult
    seq: int
    state: TicketState | None
    """The ticket's state when the reply names one."""
    ahead: int
    """Tickets ahead in admission order; -1 when unknown (pre-queue)."""
    extra_ms: int
    """Retry delay when refused, admission time when admitted."""
    stamp: str
    """The named ticket's stamp ('' when the reply names no ticket the caller may have)."""


class JoinBatch(NamedTuple):
    incarnation: str
    """The incarnation the batch's new tickets were issued in."""
    ended_incarnations: tuple[tuple[str, int], ...]
    outcomes: list[JoinOutcome]
    seq: int
    """Tickets the wave had issued after this batch (the caller's high-water mark)."""
    began: str
    """What began a new incarnation in this call: '', 'restart' or 'rollback'."""

    def incarnation_of(self, seq: int) -> str:
        """The incarnation that issued ticket `seq` (an existing place may be older)."""
        return incarnation_of(seq, self.incarnation, self.ended_incarnations)


def incarnation_of(seq: int, current: str, ended: tuple[tuple[str, int], ...]) -> str:
    """Incarnations issue consecutive ranges of seqs: the first ended one whose last seq is at
    least `seq` issued it, else the current one."""
    return next((inc for inc, last in ended if seq <= last), current)


class StatusRequest(NamedTuple):
    seq: int
    incarnation: str
    stamp: str


class StatusOutcome(NamedTuple):
    state: TicketState
    order: int
    """0-based place in admission order when waiting, else -1."""
    admitted_ms: int
    registrant_hash: str
    """Set when admitted: the admission token's subject."""


class StatusBatch(NamedTuple):
    wave_state: WaveState
    cursor: int
    outcomes: list[StatusOutcome]
    returned: int = 0
    """Holders called back while away who came back with this poll (lua/status.lua)."""


@dataclass(frozen=True, slots=True)
class Admitted:
    seq: int
    joined_ms: int
    eta_at_join_s: int
    registrant_hash: str


@dataclass(frozen=True, slots=True)
class WaveCounts:
    """A wave's counters as one script call saw them, at `now_ms` (Redis time)."""

    state: str
    seq: int
    cursor: int
    open_seq: int
    prequeue: int
    active: int
    admitted: int
    abandoned: int
    left: int
    completed: int
    expired: int
    tokens: float
    cfg_version: int
    now_ms: int
    down_ms: int
    """Outage time that does not count toward abandonment (service time = now - down_ms)."""
    incarnation: str
    ended_incarnations: tuple[tuple[str, int], ...]
    """(id, last seq) of every ended incarnation, oldest first."""
    rolled_back: frozenset[str]
    """Ended incarnations whose tickets must be checked in Redis (lua/_lib.lua)."""
    left_total: int
    """Length of the wave's left list."""
    drawn: bool = True
    """The pre-queue is drawn (public proof): reported by the admission step only."""
    ledger_length: int = 0
    """Entries in the wave's admission ledger: reported by the admission step only."""
    called: int = 0
    """Call-backs: holders the line reached while away, within their return window."""
    outbox: int = 0
    """Call-backs: messages not yet sent (the outbox's backlog)."""

    @property
    def waiting(self) -> int:
        return max(0, self.seq - self.cursor) if self.open_seq >= 0 else 0

    def issued_here(self, incarnation: str, seq: int) -> bool:
        """Whether ticket (incarnation, seq) names a place this wave's data still hold."""
        if incarnation == self.incarnation:
            return seq <= self.seq
        return any(seq <= last for inc, last in self.ended_incarnations if inc == incarnation)


class CallbackStep(NamedTuple):
    """What an admission step decided for call-back holders (lua/admit.lua)."""

    called: int = 0
    """Reached while away: told it is their turn, kept until their window ends."""
    returned: int = 0
    """Came back, and admitted."""
    not_returned: int = 0
    """Window ended with nobody back: skipped as abandoned."""


@dataclass(frozen=True, slots=True)
class AdmitStep:
    counts: WaveCounts
    admitted: list[Admitted]
    abandoned_now: int
    expired_now: int
    left: list[int]
    """Seqs of the wave's left list from position `left_from` on."""
    left_from: int
    """The absolute position `left` starts at: the caller's, or the list's trimmed head if the
    caller was behind it (what was trimmed, the cursor has passed)."""
    began: str = ""
    """What began a new incarnation in this step: '', 'restart' or 'rollback'."""
    callbacks: CallbackStep = field(default_factory=CallbackStep)


@functools.lru_cache(maxsize=64)
def _call_duration(op: str) -> Histogram:
    """The labelled child, looked up once per operation (bounded set) instead of per call."""
    return metrics.redis_call_duration.labels(op)


@functools.lru_cache(maxsize=4096)
def _wave_keys(wave: str) -> tuple[str, list[str]]:
    """(prefix, fixed keys) of a wave, built once: they are passed on every script call."""
    keys = WaveKeys(wave)
    return keys.prefix, keys.fixed


class AutopilotClaim(NamedTuple):
    claimed: bool
    """This caller makes the interval's decision (everyone else is told it is not due)."""
    interval: int
    """The interval's number (Redis time // interval)."""
    state: dict[str, str]
    """The wave's autopilot hash (lua/autopilot.lua)."""


class AutopilotApplied(NamedTuple):
    status: str
    """'applied', 'advised', or 'lost' (the interval's claim was no longer this caller's)."""
    previous_max_active: int
    previous_admit_rate: float


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _is_unknown_wave(raw: Any) -> bool:
    """The reply of every wave script when the wave does not exist."""
    if isinstance(raw, list):
        return len(raw) == 1 and _s(raw[0]) == "unknown_wave"
    return _s(raw) == "unknown_wave"


def _ended_incarnations(text: str) -> tuple[tuple[str, int], ...]:
    """'id:last_seq,...' (an id ended by a rollback carries a '!': _rolled_back)."""
    out = []
    for item in text.split(","):
        inc, _, last = item.partition(":")
        last = last.rstrip("!")
        if inc and last.isdigit():
            out.append((inc, int(last)))
    return tuple(out)


def _rolled_back(text: str) -> frozenset[str]:
    """Incarnations ended by a rollback in place: their numbers may have been issued twice."""
    return frozenset(item.partition(":")[0] for item in text.split(",") if item.endswith("!"))


class _StepExtras(NamedTuple):
    abandoned_now: int
    expired_now: int
    left_from: int
    began: str
    callbacks: CallbackStep


def _counts(pairs: Sequence[Any]) -> tuple[WaveCounts, _StepExtras]:
    """A counts reply (name/value pairs) as WaveCounts, plus what only a step reports."""
    raw = {_s(pairs[i]): pairs[i + 1] for i in range(0, len(pairs), 2)}
    number = {name: int(value) for name, value in raw.items() if isinstance(value, int)}
    counts = WaveCounts(
        state=_s(raw["state"]),
        seq=number["seq"],
        cursor=number["cursor"],
        open_seq=number["open_seq"],
        prequeue=number["prequeue"],
        active=number["active"],
        admitted=number["admitted"],
        abandoned=number["abandoned"],
        left=number["left"],
        completed=number["completed"],
        expired=number["expired"],
        tokens=float(_s(raw["tokens"])),
        cfg_version=number["cfg_version"],
        now_ms=number["now_ms"],
        down_ms=number["down_ms"],
        incarnation=_s(raw["inc"]),
        ended_incarnations=_ended_incarnations(_s(raw["incs"])),
        rolled_back=_rolled_back(_s(raw["incs"])),
        left_total=number["left_total"],
        drawn=bool(number.get("drawn", 1)),
        ledger_length=number.get("ledger", 0),
        called=number.get("called", 0),
        outbox=number.get("outbox", 0),
    )
    extras = _StepExtras(
        number["abandoned_now"],
        number["expired_now"],
        number["left_from"],
        _s(raw["began"]),
        CallbackStep(
            number.get("called_now", 0),
            number.get("returned_now", 0),
            number.get("not_returned_now", 0),
        ),
    )
    return counts, extras


class Store:
    def __init__(self, redis: RedisClient, *, clock: Clock | None, timeout_s: float) -> None:
        self.redis = redis
        self._clock = clock
        self._timeout_s = timeout_s
        self._on_unknown_wave: list[Callable[[str], None]] = []
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(_script_source(name)) for name in SCRIPTS
        }

    def on_unknown_wave(self, forget: Callable[[str], None]) -> None:
        """Call `forget(wave)` whenever a script finds the wave gone (deleted, maybe by
        another process): a copy of it kept in this process is dropped at once."""
        self._on_unknown_wave.append(forget)

    def now_arg(self) -> str:
        """Redis server time unless a clock is injected: one clock for every process."""
        return str(int(self._clock.now() * 1000)) if self._clock else ""

    async def _call(self, op: str, coro: Any) -> Any:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                return await coro
        # RedisClusterException (no node reachable, no slot map) is not a RedisError
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            metrics.redis_errors.labels(op).inc()
            log.warning("redis %s failed: %s: %s", op, type(exc).__name__, exc)
            raise StoreUnavailable(
                "The queue's state store is unavailable; please retry shortly.",
                retry_after_s=STORE_RETRY_AFTER_S,
            ) from None
        finally:
            _call_duration(op).observe(time.perf_counter() - started)

    async def _script(self, name: str, wave: str, args: Sequence[Any]) -> Any:
        _, keys = _wave_keys(wave)
        raw = await self._call(name, self._scripts[name](keys=keys, args=list(args)))
        if _is_unknown_wave(raw):
            for forget in self._on_unknown_wave:
                forget(wave)
            raise UnknownWave(wave)
        return raw

    async def ping(self) -> bool:
        return bool(await self._call("ping", self.redis.ping()))

    async def load_scripts(self) -> None:
        for script in self._scripts.values():
            await self._call("ping", self.redis.script_load(script.script))

    # -- hot path -------------------------------------------------------------------------

    async def join(
        self,
        wave: str,
        requests: Sequence[JoinRequest],
        prequeue_scores: Sequence[int],
        stamps: Sequence[str],
        limits: RateLimitRules,
        seconds_per_place: float,
        known: HighWater,
    ) -> JoinBatch:
        """`prequeue_scores`: one random rank per request, used if the wave is in pre-queue;
        `stamps`: one fresh stamp per request, used if it gets a new ticket; `known`: the
        highest seq the caller has seen issued (the rollback check, lua/_lib.lua)."""
        prefix, _ = _wave_keys(wave)
        args: list[Any] = [
            self.now_arg(),
            prefix,
            "1" if limits.enabled else "0",
            *limits.join_per_ip.as_args(),
            *limits.join_per_registrant.as_args(),
            repr(seconds_per_place),
            new_incarnation_id(),
            known.incarnation,
            known.seq,
            ",".join([r.registrant_hash for r in requests]),
            ",".join([str(r.bucket) for r in requests]),
            ",".join([r.ip for r in requests]),
            ",".join([str(score) for score in prequeue_scores]),
            ",".join([r.proof for r in requests]),
            ",".join(stamps),
        ]
        incarnation, ended, codes, named_stamps, seq, began = await self._script("join", wave, args)
        outcomes = [
            JoinOutcome(
                JOIN_RESULTS[result],
                seq,
                TICKET_STATES[state] if state >= 0 else None,
                ahead,
                extra,
                _s(stamp),
            )
            for result, seq, state, ahead, extra, stamp in zip(
                codes[0::5],
                codes[1::5],
                codes[2::5],
                codes[3::5],
                codes[4::5],
                named_stamps,
                strict=True,
            )
        ]
        return JoinBatch(
            _s(incarnation), _ended_incarnations(_s(ended)), outcomes, int(seq), _s(began)
        )

    async def status(self, wave: str, requests: Sequence[StatusRequest]) -> StatusBatch:
        prefix, _ = _wave_keys(wave)
        args = [
            self.now_arg(),
            prefix,
            ",".join([str(r.seq) for r in requests]),
            ",".join([r.incarnation for r in requests]),
            ",".join([r.stamp for r in requests]),
        ]
        wave_state, cursor, codes, subjects, returned = await self._script("status", wave, args)
        outcomes = [
            StatusOutcome(TICKET_STATES[state], order, admitted_ms, "")
            for state, order, admitted_ms in zip(codes[0::3], codes[1::3], codes[2::3], strict=True)
        ]
        for index, subject in zip(subjects[0::2], subjects[1::2], strict=True):
            outcomes[index] = outcomes[index]._replace(registrant_hash=_s(subject))
        return StatusBatch(WaveState(wave_state), int(cursor), outcomes, int(returned))

    async def record_deadlines(self, wave: str, deadlines: dict[int, int]) -> int:
        """Move the poll deadlines of waiting tickets later (seq -> service ms)."""
        prefix, _ = _wave_keys(wave)
        args = [prefix, ",".join(map(str, deadlines)), ",".join(map(str, deadlines.values()))]
        return int(await self._script("seen", wave, args))

    # -- admission and session ends -----------------------------------------------------

    async def admit(
        self,
        wave: str,
        *,
        left_from: int = 0,
        outage_gap_ms: int = 1000,
        max_admit: int = 2000,
        max_scan: int = 10000,
        known: HighWater | None = None,
    ) -> AdmitStep:
        """`left_from`: how far the caller has read the left list; `known`: the highest seq the
        caller has seen issued (the rollback check, lua/_lib.lua)."""
        prefix, _ = _wave_keys(wave)
        known = known or HighWater()
        args = [
            self.now_arg(), prefix, max_admit, max_scan, outage_gap_ms, left_from,
            new_incarnation_id(), known.incarnation, known.seq,
        ]  # fmt: skip
        pairs, admitted_raw, left = await self._script("admit", wave, args)
        counts, extras = _counts(pairs)
        admitted = [
            Admitted(
                int(admitted_raw[i]),
                int(admitted_raw[i + 1]),
                int(admitted_raw[i + 2]),
                _s(admitted_raw[i + 3]),
            )
            for i in range(0, len(admitted_raw), 4)
        ]
        return AdmitStep(
            counts,
            admitted,
            extras.abandoned_now,
            extras.expired_now,
            [int(s) for s in left],
            extras.left_from,
            extras.began,
            extras.callbacks,
        )

    async def read_counts(self, wave: str) -> WaveCounts:
        """The wave's counts, without writing anything (wave info, admin views)."""
        prefix, _ = _wave_keys(wave)
        counts, _ = _counts(await self._script("read_counts", wave, [self.now_arg(), prefix]))
        return counts

    async def leave(self, wave: str, ticket: Ticket, jti: str) -> str:
        prefix, _ = _wave_keys(wave)
        args = [self.now_arg(), prefix, ticket.seq, ticket.incarnation, ticket.stamp, jti]
        return _s(await self._script("leave", wave, args))

    async def complete(self, wave: str, ticket: Ticket, jti: str) -> str:
        prefix, _ = _wave_keys(wave)
        args = [self.now_arg(), prefix, ticket.seq, ticket.incarnation, ticket.stamp, jti]
        return _s(await self._script("complete", wave, args))

    async def revoked_after(self, wave: str, position: str) -> list[tuple[str, str]]:
        """(stream id, jti) of sessions ended after stream position `position` (exclusive; a
        bare '<ms>' means from that millisecond on, inclusive), oldest first, one page."""
        start = f"({position}" if "-" in position else f"{position}-0"
        raw = await self._call(
            "revoked",
            self.redis.xrange(WaveKeys(wave).revocations, start, "+", count=REVOKED_PAGE),
        )
        return [(_s(entry_id), _s(fields.get(b"jti", b""))) for entry_id, fields in raw]

    # -- configuration (admin paths) --------------------------------------------------------

    async def put_wave(self, config: WaveConfig) -> str:
        seed = draw.new_seed()  # kept only by a wave that has none yet (lua/put_wave.lua)
        flat: list[str] = [secrets.token_urlsafe(12), seed, draw.commitment(seed)]
        for name, value in config.to_redis().items():
            flat += [name, value]
        result = _s(await self._script("put_wave", config.id, flat))
        await self._call("wave_admin", self.redis.sadd(WAVES_KEY, config.id))
        return result

    # -- the autopilot (lua/autopilot.lua) ------------------------------------------------------

    async def autopilot_claim(self, wave: str, owner: str, interval_s: float) -> AutopilotClaim:
        prefix, _ = _wave_keys(wave)
        args = ["claim", prefix, owner, int(interval_s * 1000)]
        status, index, pairs = await self._script("autopilot", wave, args)
        state = {_s(pairs[i]): _s(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        return AutopilotClaim(_s(status) == "claimed", int(index), state)

    async def autopilot_apply(
        self,
        wave: str,
        owner: str,
        interval: int,
        *,
        apply: bool,
        target: int,
        admit_rate: float,
        record: Mapping[str, str],
    ) -> AutopilotApplied:
        """Record the interval's decision (`record`: its fields, as strings) and, if `apply`,
        set the wave's max_active and admit_rate; only the interval's claimant may."""
        prefix, _ = _wave_keys(wave)
        args = [
            "apply", prefix, owner, interval, "on" if apply else "advise", target,
            f"{admit_rate:.6g}", orjson.dumps(dict(record)).decode(),
        ]  # fmt: skip
        raw = await self._script("autopilot", wave, args)
        status, previous_max_active, previous_rate = raw
        return AutopilotApplied(_s(status), int(previous_max_active), float(_s(previous_rate)))

    async def autopilot_manual(
        self, wave: str, hold_until_ms: int, max_active: int, actor: str
    ) -> None:
        prefix, _ = _wave_keys(wave)
        args = ["manual", prefix, hold_until_ms, max_active, actor]
        await self._script("autopilot", wave, args)

    async def autopilot_view(
        self, wave: str, recent: int = 5
    ) -> tuple[dict[str, str], list[dict[str, str]]]:
        """The wave's autopilot state and its `recent` latest decisions, newest first."""
        prefix, _ = _wave_keys(wave)
        state = await self._call("wave_admin", self.redis.hgetall(prefix + "ap"))
        log = await self._call("wave_admin", self.redis.xrevrange(prefix + "ap:log", count=recent))
        decisions = [
            {"id": _s(entry_id), **{_s(k): _s(v) for k, v in fields.items()}}
            for entry_id, fields in log
        ]
        return {_s(k): _s(v) for k, v in state.items()}, decisions

    async def control(self, wave: str, action: str) -> str:
        return _s(await self._script("control", wave, [action]))

    async def get_wave(self, wave: str) -> tuple[WaveConfig, int, str] | None:
        """The wave's configuration, its version (bumped by every change) and its uid."""
        raw = await self._call("wave_admin", self.redis.hgetall(WaveKeys(wave).cfg))
        if not raw:
            return None
        return WaveConfig.from_redis(raw), int(raw.get(b"version", b"0")), _s(raw.get(b"uid", ""))

    async def wave_ids(self) -> list[str]:
        members = await self._call("wave_admin", self.redis.smembers(WAVES_KEY))
        return sorted(_s(m) for m in members)

    async def delete_wave(self, wave: str) -> int:
        """Remove a wave and every key it has. The configuration goes first, so the wave is
        gone for every process at once; its other keys are then unlinked in batches. Returns
        the number of keys removed."""
        keys = WaveKeys(wave)
        removed = int(await self._call("wave_admin", self.redis.unlink(keys.cfg)))
        await self._call("wave_admin", self.redis.srem(WAVES_KEY, wave))
        batch: list[Any] = []

        async def unlink_batch() -> int:
            count = int(await self._call("wave_admin", self.redis.unlink(*batch)))
            batch.clear()
            return count

        async for key in self.redis.scan_iter(match=keys.prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                removed += await unlink_batch()
        if batch:
            removed += await unlink_batch()
        return removed

    # -- public proof (issue 25): the draw, the ledger, one-time bindings ---------------------

    async def draw_begin(self, wave: str, owner: str, lease_ms: int) -> tuple[str, str, int]:
        """('drawing', seed, N) when this caller must draw the pre-queue's N tickets now; else
        ('drawn' | 'busy' | 'not_open', '', 0) (lua/draw.lua)."""
        prefix, _ = _wave_keys(wave)
        seed = draw.new_seed()
        args = ["begin", prefix, self.now_arg(), owner, lease_ms, seed, draw.commitment(seed)]
        raw = await self._script("draw", wave, args)
        if _s(raw[0]) != "drawing":
            return _s(raw[0]), "", 0
        return "drawing", _s(raw[1]), int(raw[2])

    async def draw_rank(self, wave: str, owner: str, size: int, ranks: Sequence[int]) -> bool:
        """Score pre-queue tickets by their rank: `ranks` is rank, seq, rank, seq, ..."""
        prefix, _ = _wave_keys(wave)
        args = ["rank", prefix, self.now_arg(), owner, size, *ranks]
        return _s(await self._script("draw", wave, args)) == "ok"

    async def draw_finish(self, wave: str, owner: str, size: int) -> bool:
        prefix, _ = _wave_keys(wave)
        args = ["finish", prefix, self.now_arg(), owner, size]
        return _s(await self._script("draw", wave, args)) == "done"

    async def draw_public(self, wave: str) -> dict[str, str]:
        """The draw's public fields: the commitment always; the seed only once drawn."""
        raw = await self._call(
            "proof",
            self.redis.hmget(
                WaveKeys(wave).draw, "commitment", "seed", "drawn_ms", "prequeue", "legacy"
            ),
        )
        commitment, seed, drawn_ms, prequeue, legacy = (_s(v) if v else "" for v in raw)
        public = {"commitment": commitment}
        if drawn_ms:
            public.update(seed=seed, drawn_ms=drawn_ms, prequeue=prequeue, legacy=legacy)
        return public

    async def ledger_unsealed(self, wave: str, most: int) -> tuple[int, str, int, list[str], int]:
        """(sealed, head hex, checkpoints stored, up to `most` lines from `sealed` on, length)."""
        prefix, _ = _wave_keys(wave)
        sealed, head, checkpoints, lines, length = await self._script(
            "ledger_seal", wave, ["read", prefix, most]
        )
        return int(sealed), _s(head), int(checkpoints), [_s(x) for x in lines], int(length)

    async def ledger_store_seal(
        self, wave: str, expected: int, sealed: int, head: str, checkpoints: Sequence[str]
    ) -> tuple[bool, int, str]:
        """Store the chain up to `sealed` if nobody did since `expected`: (written, sealed,
        head) as stored now."""
        prefix, _ = _wave_keys(wave)
        args = ["write", prefix, expected, sealed, head, *checkpoints]
        status, now_sealed, now_head = await self._script("ledger_seal", wave, args)
        return _s(status) == "ok", int(now_sealed), _s(now_head)

    async def ledger_lines(
        self, wave: str, start: int, stop: int, checkpoint: int
    ) -> tuple[list[str], str | None, int]:
        """Lines start..stop (inclusive), the stored checkpoint number `checkpoint` (None when
        absent, or when -1 is asked), and the ledger's length; one round trip."""
        prefix, _ = _wave_keys(wave)
        args = ["page", prefix, start, stop, checkpoint]
        lines, stored, length = await self._script("ledger_seal", wave, args)
        return [_s(x) for x in lines], (_s(stored) or None), int(length)

    async def bind_once(self, wave: str, token_id: str, binding: str, until_ms: int) -> str:
        """Bind a one-time token to `binding` unless it is bound: the binding it has now."""
        key = WaveKeys(wave).binding(token_id)
        previous = await self._call(
            "bind", self.redis.set(key, binding, nx=True, get=True, pxat=max(1, until_ms))
        )
        return binding if previous is None else _s(previous)

    # -- call-backs (issue 24): opt-in, the notify step, the return link, the outbox ----------

    async def opt_in(
        self, wave: str, ticket: Ticket, head: str, sealed: str, max_changes: int
    ) -> tuple[str, str]:
        """(result, seen mark) of lua/optin.lua. `head`: 'lang|kind|code hash|code bucket';
        `sealed`: the contact's ciphertext."""
        prefix, _ = _wave_keys(wave)
        args = [
            self.now_arg(), prefix, ticket.seq, ticket.incarnation, ticket.stamp, head, sealed,
            max_changes,
        ]  # fmt: skip
        result, mark = await self._script("optin", wave, args)
        return _s(result), _s(mark)

    async def notify_near(self, wave: str, places: int, most: int = 1000) -> tuple[int, int]:
        """(holders told now, holders still to be told) of lua/notify.lua."""
        prefix, _ = _wave_keys(wave)
        told, pending = await self._script("notify", wave, [self.now_arg(), prefix, places, most])
        return int(told), int(pending)

    async def return_link(self, wave: str, code_hash: str, bucket: int) -> tuple[str, Ticket]:
        """Use a return code once (lua/return_link.lua): (result, the ticket it names)."""
        prefix, _ = _wave_keys(wave)
        raw = await self._script("return_link", wave, [self.now_arg(), prefix, code_hash, bucket])
        result, seq, stamp, current, ended = (_s(x) for x in raw)
        if result == "unknown":
            return result, Ticket(0, "", "")
        number = int(seq)
        incarnation = incarnation_of(number, current, _ended_incarnations(ended))
        return result, Ticket(number, incarnation, stamp)

    async def carried_ahead(self, wave: str) -> list[int]:
        """Tickets carried over ahead of everyone into this wave's pre-queue, in order."""
        raw = await self._call("carry", self.redis.lrange(WaveKeys(wave).carried, 0, -1))
        return [int(_s(x)) for x in raw]

    async def carry_begin(self, wave: str, owner: str, lease_ms: int) -> tuple[str, int]:
        prefix, _ = _wave_keys(wave)
        raw = await self._script("carry", wave, ["begin", prefix, self.now_arg(), owner, lease_ms])
        return _s(raw[0]), int(raw[1]) if len(raw) > 1 else 0

    async def carry_out(
        self, wave: str, owner: str, seqs: Sequence[int]
    ) -> list[tuple[int, str, str, str]] | None:
        """(seq, stamp, account ciphertext, call-back record) of the holders still waiting and
        verified among `seqs`; None when the lease was lost."""
        prefix, _ = _wave_keys(wave)
        raw = await self._script("carry", wave, ["out", prefix, self.now_arg(), owner, *seqs])
        if _s(raw[0]) != "ok":
            return None
        items = [_s(x) for x in raw[1:]]
        return [
            (int(items[i]), items[i + 1], items[i + 2], items[i + 3])
            for i in range(0, len(items), 4)
        ]

    async def carry_done(
        self, wave: str, owner: str, position: int, finished: bool, moved: Sequence[int]
    ) -> bool:
        prefix, _ = _wave_keys(wave)
        args = ["done", prefix, self.now_arg(), owner, position, "1" if finished else "0", *moved]
        return _s(await self._script("carry", wave, args)) == "ok"

    async def carry_in(
        self, wave: str, order: str, origin: str, items: Sequence[Sequence[str | int]]
    ) -> tuple[str, list[str]]:
        """Create the carried holders' places in `wave` (8 values each, lua/carry.lua): the
        wave's state, and per holder 'moved:<seq>', 'held' or 'refused'."""
        prefix, _ = _wave_keys(wave)
        flat = [value for item in items for value in item]
        raw = await self._script(
            "carry", wave, ["in", prefix, self.now_arg(), order, origin, *flat]
        )
        return _s(raw[0]), [_s(x) for x in raw[1:]]

    async def carry_candidates(self, wave: str, position: int, count: int) -> tuple[list[int], int]:
        """Tickets of an ended wave from admission-order `position` on (the line's part the
        cursor had not reached), at most `count`: (seqs, total positions)."""
        keys = WaveKeys(wave)
        raw = await self._call("carry", self.redis.hmget(keys.ctl, "cursor", "seq", "open_seq"))
        cursor, seq, open_seq = (int(_s(v)) if v is not None else 0 for v in raw)
        if raw[2] is None:
            open_seq = -1
        prequeue = seq if open_seq < 0 else open_seq
        total = max(0, seq - cursor) if open_seq >= 0 else seq
        start = (cursor if open_seq >= 0 else 0) + position
        seqs: list[int] = []
        if start < prequeue:
            stop = min(prequeue, start + count) - 1
            members = await self._call("carry", self.redis.zrange(keys.prequeue, start, stop))
            seqs = [int(_s(m)) for m in members]
            start = stop + 1
        while len(seqs) < count and start < seq:
            seqs.append(start + 1)  # after the pre-queue, order n is ticket n + 1
            start += 1
        return seqs, total

    async def forget_contacts(self, wave: str, buckets_per_call: int = 5000) -> bool:
        """An ended wave's contacts, accounts, call-back sets and return codes, deleted (in
        calls of `buckets_per_call` ticket buckets); False if the wave has not ended."""
        from queue_service.contacts import RETURN_BUCKETS

        prefix, _ = _wave_keys(wave)
        bucket = 0
        while True:
            args = ["forget", prefix, self.now_arg(), bucket, buckets_per_call, RETURN_BUCKETS]
            bucket, done = (int(x) for x in await self._script("carry", wave, args))
            if done:
                return True
            if bucket == 0:
                return False

    async def called_now(self, wave: str) -> list[int]:
        """Holders the line reached while away (within their window): at the front."""
        raw = await self._call("carry", self.redis.zrange(WaveKeys(wave).called, 0, -1))
        return [int(_s(x)) for x in raw]

    async def keep_account(self, wave: str, seq: int, sealed: str) -> None:
        """A verified holder's encrypted account (ca:), for carry-over."""
        keys = WaveKeys(wave)
        await self._call("optin", self.redis.hset(keys.account_bucket(seq), str(seq), sealed))

    async def callback_record(self, wave: str, seq: int) -> str | None:
        """The ticket's call-back record (ct:), None once it ended or was admitted."""
        raw = await self._call(
            "outbox", self.redis.hget(WaveKeys(wave).callback_bucket(seq), str(seq))
        )
        return _s(raw) if raw is not None else None

    async def outbox_group(self, wave: str) -> None:
        """The senders' consumer group on the wave's outbox (created once, from the start)."""
        try:
            await self._call(
                "outbox",
                self.redis.xgroup_create(
                    WaveKeys(wave).outbox, OUTBOX_GROUP, id="0", mkstream=True
                ),
            )
        except StoreUnavailable:
            raise
        except Exception as exc:  # BUSYGROUP: it exists
            if "BUSYGROUP" not in str(exc):
                raise

    async def outbox_read(
        self, wave: str, consumer: str, count: int, retry_idle_ms: int
    ) -> list[tuple[str, dict[str, str]]]:
        """New messages for this consumer, then messages idle longer than `retry_idle_ms`
        (a sender that failed them, or died holding them), claimed for a retry."""
        keys = WaveKeys(wave)
        fresh = await self._call(
            "outbox",
            self.redis.xreadgroup(OUTBOX_GROUP, consumer, {keys.outbox: ">"}, count=count),
        )
        entries = [(_s(i), _decode_fields(f)) for _, items in fresh or [] for i, f in items]
        if len(entries) < count:
            claimed = await self._call(
                "outbox",
                self.redis.xautoclaim(
                    keys.outbox, OUTBOX_GROUP, consumer, retry_idle_ms, count=count - len(entries)
                ),
            )
            taken = {entry_id for entry_id, _ in entries}
            entries += [
                (_s(i), _decode_fields(f)) for i, f in claimed[1] if f and _s(i) not in taken
            ]
        return entries

    async def outbox_done(self, wave: str, entry_id: str) -> None:
        """A message delivered (or dropped on purpose): acknowledged and deleted, at once."""
        prefix, _ = _wave_keys(wave)
        await self._script("outbox", wave, ["done", prefix, OUTBOX_GROUP, entry_id])

    async def outbox_failed(
        self, wave: str, entry_id: str, now_ms: int, base_ms: int, cap_ms: int, jitter: float
    ) -> int:
        """A failed try: the count of tries so far; the message stays pending, to be tried again
        after base * 2^(tries-1) ms (capped, times `jitter`): see outbox_due."""
        prefix, _ = _wave_keys(wave)
        args = ["failed", prefix, OUTBOX_GROUP, entry_id, now_ms, base_ms, cap_ms, f"{jitter:.3f}"]
        return int(await self._script("outbox", wave, args))

    async def outbox_due(self, wave: str, entry_ids: Sequence[str]) -> list[int]:
        """When each message may be tried again (ms; 0 = now)."""
        if not entry_ids:
            return []
        raw = await self._call(
            "outbox",
            self.redis.hmget(WaveKeys(wave).outbox_tries, [i + ":at" for i in entry_ids]),
        )
        return [int(_s(v)) if v else 0 for v in raw]

    async def outbox_dead(self, wave: str, entry_id: str, fields: Mapping[str, str]) -> None:
        """Given up after its last try: moved to the dead letters (no contact in them)."""
        prefix, _ = _wave_keys(wave)
        flat = [x for pair in fields.items() for x in pair]
        args = ["dead", prefix, OUTBOX_GROUP, entry_id, DEAD_LETTERS_KEPT, *flat]
        await self._script("outbox", wave, args)


def _decode_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in fields.items()}


async def resolve_secret(redis: RedisClient, configured: str | None) -> bytes:
    """The configured secret, else one generated once and shared through Redis by every
    process and replica using that Redis (SET NX: the first writer wins)."""
    if configured:
        return configured.encode()
    await redis.set(SECRET_KEY, secrets.token_urlsafe(32), nx=True)
    stored = await redis.get(SECRET_KEY)
    if not stored:
        raise RuntimeError("could not read the service secret from Redis")
    return stored.encode() if isinstance(stored, str) else bytes(stored)
