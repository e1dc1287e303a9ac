"""Redis access: the Lua scripts, registered once, called with explicit KEYS and ARGV.

Every call is bounded in time; any Redis failure becomes `StoreUnavailable` (503) here, once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

from prometheus_client import Histogram
from redis.commands.core import AsyncScript
from redis.exceptions import RedisClusterException, RedisError

from queue_service import metrics
from queue_service.clock import Clock
from queue_service.errors import StoreUnavailable
from queue_service.keys import WAVES_KEY, WaveKeys
from queue_service.ratelimit import RateLimitRules
from queue_service.redis_client import RedisClient
from queue_service.waves import WaveConfig

log = logging.getLogger(__name__)

SCRIPTS = ("join", "status", "admit", "leave", "complete", "put_wave", "control")
STORE_RETRY_AFTER_S = 2


def _script_source(name: str) -> str:
    package = resources.files("queue_service") / "lua"
    return (package / "_lib.lua").read_text() + "\n" + (package / f"{name}.lua").read_text()


# Batches go to the hot-path scripts as comma-joined lists: no item can hold a comma (client
# addresses come from a peer address or an X-Forwarded-For hop, which is split on commas;
# registrant hashes are url-safe base64), and the scripts refuse a batch whose lists differ in
# length rather than answer anyone with someone else's result.
# Reply codes of join.lua and status.lua (their order is the scripts' code tables in _lib.lua
# and join.lua): the hot-path scripts answer with integers, which cost the client nothing to
# parse.
TICKET_STATES = ("waiting", "prequeue", "admitted", "expired", "closed", "unknown")
JOIN_RESULTS = (
    "new",
    "existing",
    "rejoined",
    "rl_ip",
    "rl_registrant",
    "scheduled",
    "closed",
    "full",
)
STATUS_RESULTS = ("ok", "rl_ip", "rl_ticket")


class JoinRequest(NamedTuple):
    registrant_hash: str
    bucket: int
    ip: str


class JoinOutcome(NamedTuple):
    result: str
    """new | existing | rejoined | rl_ip | rl_registrant | scheduled | closed | full"""
    seq: int
    state: str
    """The ticket's state (TICKET_STATES) when a ticket is returned, else ''."""
    ahead: int
    """-1 when unknown (pre-queue)."""
    extra_ms: int
    """Retry delay when refused, admission time when admitted."""


class StatusRequest(NamedTuple):
    seq: int
    ip: str


class StatusOutcome(NamedTuple):
    result: str
    """ok | rl_ip | rl_ticket"""
    state: str
    """The ticket's state (TICKET_STATES) when ok, else ''."""
    ahead: int
    extra_ms: int
    """Admission time when admitted, retry delay when rate limited."""
    registrant_hash: str
    """Set when admitted: the admission token's subject."""


@dataclass(frozen=True, slots=True)
class Admitted:
    seq: int
    joined_ms: int
    eta_at_join_s: int
    registrant_hash: str


@dataclass(frozen=True, slots=True)
class WaveCounts:
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

    @property
    def waiting(self) -> int:
        return max(0, self.seq - self.cursor) if self.open_seq >= 0 else 0


@dataclass(frozen=True, slots=True)
class AdmitStep:
    counts: WaveCounts
    admitted: list[Admitted]
    abandoned_now: int
    expired_now: int


@functools.lru_cache(maxsize=64)
def _call_duration(op: str) -> Histogram:
    """The labelled child, looked up once per operation (bounded set) instead of per call."""
    return metrics.redis_call_duration.labels(op)


class UnknownWave(Exception):
    pass


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _is_unknown_wave(raw: Sequence[Any]) -> bool:
    """The array reply of join, status and admit when the wave does not exist."""
    return len(raw) == 1 and _s(raw[0]) == "unknown_wave"


class Store:
    def __init__(self, redis: RedisClient, *, clock: Clock | None, timeout_s: float) -> None:
        self.redis = redis
        self._clock = clock
        self._timeout_s = timeout_s
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(_script_source(name)) for name in SCRIPTS
        }

    def _now_arg(self) -> str:
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

    async def _script(self, name: str, keys: WaveKeys, args: Sequence[Any]) -> Any:
        return await self._call(
            name, self._scripts[name](keys=[keys.cfg, keys.ctl], args=list(args))
        )

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
        limits: RateLimitRules,
        seconds_per_place: float,
    ) -> list[JoinOutcome]:
        """`prequeue_scores`: one random rank per request, used if the wave is in pre-queue."""
        keys = WaveKeys(wave)
        args: list[Any] = [
            self._now_arg(),
            keys.prefix,
            "1" if limits.enabled else "0",
            *limits.join_per_ip.as_args(),
            *limits.join_per_registrant.as_args(),
            repr(seconds_per_place),
        ]
        args += [
            ",".join([r.registrant_hash for r in requests]),
            ",".join([str(r.bucket) for r in requests]),
            ",".join([r.ip for r in requests]),
            ",".join([str(score) for score in prequeue_scores]),
        ]
        raw = await self._script("join", keys, args)
        if _is_unknown_wave(raw):
            raise UnknownWave(wave)
        return [
            JoinOutcome(
                JOIN_RESULTS[result], seq, TICKET_STATES[state] if state >= 0 else "", ahead, extra
            )
            for result, seq, state, ahead, extra in zip(
                raw[0::5], raw[1::5], raw[2::5], raw[3::5], raw[4::5], strict=True
            )
        ]

    async def status(
        self, wave: str, requests: Sequence[StatusRequest], limits: RateLimitRules
    ) -> list[StatusOutcome]:
        keys = WaveKeys(wave)
        args: list[Any] = [
            self._now_arg(),
            keys.prefix,
            "1" if limits.enabled else "0",
            *limits.status_per_ip.as_args(),
            *limits.status_per_ticket.as_args(),
        ]
        args += [",".join([str(r.seq) for r in requests]), ",".join([r.ip for r in requests])]
        raw = await self._script("status", keys, args)
        if _is_unknown_wave(raw):
            raise UnknownWave(wave)
        _, codes, subjects = raw  # the wave state comes first; no caller needs it
        outcomes = [
            StatusOutcome(
                STATUS_RESULTS[result], TICKET_STATES[state] if state >= 0 else "", ahead, extra, ""
            )
            for result, state, ahead, extra in zip(
                codes[0::4], codes[1::4], codes[2::4], codes[3::4], strict=True
            )
        ]
        for index, subject in zip(subjects[0::2], subjects[1::2], strict=True):
            outcomes[index] = outcomes[index]._replace(registrant_hash=_s(subject))
        return outcomes

    # -- admission and session ends -----------------------------------------------------

    async def admit(self, wave: str, *, max_admit: int = 2000, max_scan: int = 10000) -> AdmitStep:
        keys = WaveKeys(wave)
        raw = await self._script("admit", keys, [self._now_arg(), keys.prefix, max_admit, max_scan])
        if _is_unknown_wave(raw):
            raise UnknownWave(wave)
        counts = WaveCounts(
            state=_s(raw[0]),
            seq=int(raw[1]),
            cursor=int(raw[2]),
            open_seq=int(raw[3]),
            prequeue=int(raw[4]),
            active=int(raw[5]),
            admitted=int(raw[6]),
            abandoned=int(raw[7]),
            left=int(raw[8]),
            completed=int(raw[9]),
            expired=int(raw[10]),
            tokens=float(_s(raw[11])),
            cfg_version=int(raw[12]),
            now_ms=int(raw[13]),
        )
        admitted = [
            Admitted(int(raw[i]), int(raw[i + 1]), int(raw[i + 2]), _s(raw[i + 3]))
            for i in range(16, len(raw), 4)
        ]
        return AdmitStep(counts, admitted, int(raw[14]), int(raw[15]))

    async def leave(self, wave: str, seq: int) -> str:
        keys = WaveKeys(wave)
        result = _s(await self._script("leave", keys, [self._now_arg(), keys.prefix, seq]))
        if result == "unknown_wave":
            raise UnknownWave(wave)
        return result

    async def complete(self, wave: str, seq: int) -> str:
        keys = WaveKeys(wave)
        result = _s(await self._script("complete", keys, [keys.prefix, seq]))
        if result == "unknown_wave":
            raise UnknownWave(wave)
        return result

    # -- configuration (admin paths) --------------------------------------------------------

    async def put_wave(self, config: WaveConfig) -> str:
        keys = WaveKeys(config.id)
        flat: list[str] = []
        for field, value in config.to_redis().items():
            flat += [field, value]
        result = _s(await self._script("put_wave", keys, flat))
        await self._call("wave_admin", self.redis.sadd(WAVES_KEY, config.id))
        return result

    async def control(self, wave: str, action: str) -> str:
        result = _s(await self._script("control", WaveKeys(wave), [action]))
        if result == "unknown_wave":
            raise UnknownWave(wave)
        return result

    async def get_wave(self, wave: str) -> tuple[WaveConfig, int] | None:
        """The wave's configuration and its version (bumped by every change)."""
        raw = await self._call("wave_admin", self.redis.hgetall(WaveKeys(wave).cfg))
        if not raw:
            return None
        return WaveConfig.from_redis(raw), int(raw.get(b"version", b"0"))

    async def wave_ids(self) -> list[str]:
        members = await self._call("wave_admin", self.redis.smembers(WAVES_KEY))
        return sorted(_s(m) for m in members)
