"""`lua/admit.lua` and `queue_service.admission_policy` state the same rules: the script is run
on a real Redis from states written straight into the wave's keys (a bucket, slots and quota
already taken, holders' deadlines, an outage credited) and every decision it takes is the one
the Python functions give. The offline model and `pacing` import the Python; this test keeps it
the script's."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from queue_service import admission_policy as policy
from queue_service import pacing
from queue_service.clock import ManualClock
from queue_service.keys import WaveKeys
from queue_service.store import AdmitStep, Store
from queue_service.waves import parse_wave
from tests.helpers.support import T0

WAVE = "policy"
NOW_MS = int(T0 * 1000)
SEEN_BUCKET = 100  # lua/_lib.lua BUCKET_SIZE


@dataclass(frozen=True)
class Case:
    admit_rate: float
    admit_burst: float
    tokens: float
    elapsed_ms: int  # since the bucket was last counted
    max_active: int
    active: int
    quota: int
    admitted: int
    max_admit: int
    down_ms: int  # outage time credited: service time = now - down_ms
    grace_ms: int
    ttl_ms: int
    deadlines: tuple[int, ...]  # each waiting ticket's deadline, in service ms (now = 0)


HAND_PICKED = [
    # a full bucket, nothing else binding
    Case(2.0, 5.0, 5.0, 0, 0, 0, 0, 0, 100, 0, 60_000, 600_000, (10,) * 8),
    # refilled to the burst, and the burst caps it
    Case(2.0, 3.0, 0.5, 10_000, 0, 0, 0, 0, 100, 0, 60_000, 600_000, (10,) * 8),
    # a fraction of a token: nobody yet
    Case(2.0, 3.0, 0.2, 300, 0, 0, 0, 0, 100, 0, 60_000, 600_000, (10,) * 3),
    # max_active binds, then quota binds, then the step's own cap
    Case(50.0, 50.0, 50.0, 0, 7, 4, 0, 0, 100, 0, 60_000, 600_000, (10,) * 9),
    Case(50.0, 50.0, 50.0, 0, 0, 0, 10, 8, 100, 0, 60_000, 600_000, (10,) * 9),
    Case(50.0, 50.0, 50.0, 0, 0, 0, 0, 0, 4, 0, 60_000, 600_000, (10,) * 9),
    # deadlines passed are skipped for free; exactly on the deadline keeps the place
    Case(1.0, 1.0, 1.0, 0, 0, 0, 0, 0, 100, 0, 60_000, 600_000, (-5, -1, 0, 30)),
    # an outage credited: the same deadlines, now kept
    Case(1.0, 2.0, 2.0, 0, 0, 0, 0, 0, 100, 5_000, 60_000, 600_000, (-4_000, -6_000, 30)),
    # a deadline further away than a session: the claim is cut to the TTL
    Case(5.0, 5.0, 5.0, 0, 0, 0, 0, 0, 100, 0, 60_000, 2_000, (10_000, 500)),
]


def random_cases(n: int, seed: int = 20261207) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        rate = rng.choice([0.5, 1.0, 2.5, 17.0, 41.7, 300.0])
        burst = max(1.0, rate * rng.choice([0.5, 1.0, 3.0]))
        max_active = rng.choice([0, 0, 3, 10, 40])
        quota = rng.choice([0, 0, 5, 30, 100])
        cases.append(
            Case(
                admit_rate=rate,
                admit_burst=burst,
                tokens=round(rng.uniform(0, burst), 6),
                elapsed_ms=rng.choice([0, 1, 37, 250, 1_000, 9_999]),
                max_active=max_active,
                active=rng.randint(0, max_active) if max_active else rng.randint(0, 5),
                quota=quota,
                admitted=rng.randint(0, quota) if quota else rng.randint(0, 50),
                max_admit=rng.choice([1, 3, 2000]),
                down_ms=rng.choice([0, 0, 700, 30_000]),
                grace_ms=rng.choice([5_000, 60_000]),
                ttl_ms=rng.choice([1_000, 600_000]),
                deadlines=tuple(
                    rng.choice([-20_000, -1, 0, 1, 400, 5_000, 900_000])
                    for _ in range(rng.randint(0, 25))
                ),
            )
        )
    return cases


CASES = HAND_PICKED + random_cases(120)


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> AsyncIterator[Store]:
    yield Store(redis_client, clock=ManualClock(T0), timeout_s=5.0)


async def set_up(redis: aioredis.Redis, store: Store, case: Case) -> None:
    """The wave open since a minute, with the case's bucket, counters, slots and tickets."""
    await redis.flushall()
    config = {
        "opens_at": T0 - 60,
        "closes_at": T0 + 3600,
        "admit_rate": case.admit_rate,
        "admit_burst": case.admit_burst,
        "max_active": case.max_active,
        "quota": case.quota,
        "session_ttl_s": case.ttl_ms / 1000,
        "abandon_after_s": case.grace_ms / 1000,
        "origin_url": "http://127.0.0.1:9/",
    }
    await store.put_wave(parse_wave(WAVE, config))
    keys = WaveKeys(WAVE)
    seq = len(case.deadlines)
    await redis.hset(
        keys.ctl,
        mapping={
            "seq": seq,
            "cursor": 0,
            "open_seq": 0,
            "admitted": case.admitted,
            "tokens": f"{case.tokens:.6f}",
            "tokens_at": NOW_MS - case.elapsed_ms,
            "step_at": NOW_MS,  # no gap since the last step: no outage credited now
            "down_ms": case.down_ms,
        },
    )
    service_now = NOW_MS - case.down_ms
    for n, deadline in enumerate(case.deadlines, start=1):
        seen = f"{keys.prefix}seen:{n // SEEN_BUCKET}"
        await redis.hset(seen, str(n), service_now + deadline)
    for n in range(case.active):  # sessions of other holders, live beyond this step
        await redis.zadd(keys.active, {str(10_000 + n): NOW_MS + 3_600_000})


def expected(case: Case) -> tuple[list[int], float, list[tuple[int, float]]]:
    """What the rules say: the seqs admitted, the tokens left, and each admitted seq's claim."""
    tokens = policy.refill(case.tokens, case.elapsed_ms, case.admit_rate / 1000, case.admit_burst)
    allowed = policy.allowance(
        tokens,
        case.max_admit,
        max_active=case.max_active,
        active=case.active,
        quota=case.quota,
        admitted=case.admitted,
    )
    service_now = NOW_MS - case.down_ms
    admitted, claims = [], []
    for seq, offset in enumerate(case.deadlines, start=1):
        if len(admitted) >= allowed:
            break
        deadline = service_now + offset
        if policy.keeps_place(deadline, service_now):
            admitted.append(seq)
            claims.append((seq, policy.claim_until(NOW_MS, deadline, service_now, case.ttl_ms)))
    return admitted, tokens - len(admitted), claims


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
async def test_admit_lua_takes_the_decisions_the_policy_states(
    redis_client: aioredis.Redis, store: Store, case: Case
) -> None:
    await set_up(redis_client, store, case)
    step: AdmitStep = await store.admit(WAVE, max_admit=case.max_admit)
    admitted, tokens_left, claims = expected(case)
    assert [a.seq for a in step.admitted] == admitted
    assert step.counts.tokens == pytest.approx(tokens_left, abs=2e-6)  # stored as %.6f
    skipped = [
        seq
        for seq, offset in enumerate(case.deadlines, start=1)
        if seq <= step.counts.cursor and seq not in admitted
    ]
    assert step.abandoned_now == len(skipped)
    assert all(offset < 0 for seq, offset in enumerate(case.deadlines, 1) if seq in skipped)
    for seq, until in claims:
        score = await redis_client.zscore(WaveKeys(WAVE).active, str(seq))
        assert score == until


def test_the_first_token_comes_when_the_bucket_has_refilled_one() -> None:
    for tokens, rate in [(0.0, 2.0), (0.25, 0.5), (0.999, 41.7), (1.0, 3.0), (2.5, 1.0)]:
        at = policy.first_token_at(tokens, 10.0, rate)
        assert policy.refill(tokens, at - 10.0, rate, burst=100.0) == pytest.approx(
            max(1.0, tokens)
        )
        assert at == 10.0 or policy.refill(tokens, (at - 10.0) * 0.999, rate, 100.0) < 1.0


def test_the_deadline_pacing_tells_is_the_policys_in_whole_milliseconds() -> None:
    for now_ms, poll_ms, grace_ms in [(NOW_MS, 1_000, 300_000), (5, 899_999, 0), (0, 7, 1)]:
        told = pacing.poll_deadline_ms(now_ms, poll_ms, grace_ms)
        assert told == math.floor(policy.poll_deadline(now_ms, poll_ms, grace_ms))
        assert told == now_ms + int(poll_ms * policy.DEADLINE_SLACK) + grace_ms


def test_the_prequeue_is_told_to_come_back_within_the_spread() -> None:
    for size in (0, 10, 5_000, 60_000, 10**7):
        spread_s = policy.prequeue_spread_s(size)
        assert 1.0 <= spread_s <= policy.PREQUEUE_MAX_SPREAD_S
        latest = pacing.prequeue_poll_after_ms(0.0, size, 0.999999)
        assert latest <= pacing.MIN_POLL_MS + spread_s * 1000
        if spread_s < policy.PREQUEUE_MAX_SPREAD_S:  # within the poll budget
            assert size / spread_s <= policy.PREQUEUE_POLL_BUDGET_PER_S + 1e-9
