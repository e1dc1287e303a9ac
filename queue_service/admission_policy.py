"""The admission rules as arithmetic, stated once: what `lua/admit.lua` decides at each step and
what a waiting holder is held to.

The script is where the decisions are made (atomically, in Redis); this module states the same
rules in Python for everything that must agree with it without running it: `pacing` (what a
holder is told), the offline model (`simulator.model`) and the planner. No I/O and no clock:
times are arguments, in whichever unit the caller counts (the script counts milliseconds, the
model seconds); rates are per that unit. `tests/unit/test_admission_policy.py` runs admit.lua
on a real Redis against these functions, so the two cannot drift apart.

- the token bucket: `refill` (admit_rate per unit of time, at most the burst stored; it
  starts full) and `first_token_at` (when a whole token is there to spend);
- `allowance`: how many one step may admit (whole tokens, the step's cap, free max_active
  slots, quota left);
- the poll deadline: `poll_deadline` (the last moment a holder told to poll in `poll` must
  have polled again), `keeps_place` (the cursor admits a ticket whose deadline has not passed
  on the service clock, and skips it as abandoned otherwise) and `claim_until` (an admitted
  ticket holds its slot until its holder's deadline, at most a session);
- `prequeue_spread_s`: the window over which the pre-queue's first polls after the opening
  are spread, so that they cost at most PREQUEUE_POLL_BUDGET_PER_S.
"""

from __future__ import annotations

import math

DEADLINE_SLACK = 1.1
"""Clients jitter their polls by up to +10% (the waiting page, the simulator)."""
PREQUEUE_POLL_BUDGET_PER_S = 5_000.0
"""At opening every pre-queue holder comes back at once; spread them so they cost at most
about this many polls per second."""
PREQUEUE_MAX_SPREAD_S = 60.0


def refill(tokens: float, elapsed: float, rate: float, burst: float) -> float:
    """The bucket's tokens `elapsed` units after it held `tokens`: `rate` a unit, at most
    `burst` stored."""
    return min(burst, tokens + elapsed * rate)


def first_token_at(tokens: float, tokens_at: float, rate: float) -> float:
    """When a bucket that held `tokens` at `tokens_at` next holds a whole token."""
    if tokens >= 1.0:
        return tokens_at
    return tokens_at + (1.0 - tokens) / rate


def allowance(
    tokens: float, max_admit: int, *, max_active: int, active: int, quota: int, admitted: int
) -> int:
    """How many one admission step may admit: whole tokens, at most `max_admit` (the step's
    own cap), no more than the free slots (`max_active` 0: no limit) and the quota left
    (`quota` 0: none)."""
    allowed = min(math.floor(tokens), max_admit)
    if max_active > 0:
        allowed = min(allowed, max_active - active)
    if quota > 0:
        allowed = min(allowed, quota - admitted)
    return allowed


def poll_deadline(now: float, poll: float, grace: float) -> float:
    """The latest service time by which a holder told at `now` to poll again in `poll` must
    have polled to keep the place: the interval with the clients' jitter, then the grace
    (`abandon_after_s`)."""
    return now + poll * DEADLINE_SLACK + grace


def keeps_place(deadline: float, service_now: float) -> bool:
    """Whether the cursor admits a waiting ticket (its holder's deadline has not passed on the
    service clock) rather than skipping it as abandoned."""
    return service_now <= deadline


def claim_until(now: float, deadline: float, service_now: float, session_ttl: float) -> float:
    """Until when an admission holds its slot before its holder's poll claims it: the holder's
    deadline (counted on the service clock), never longer than a session."""
    return min(deadline + (now - service_now), now + session_ttl)


def prequeue_spread_s(prequeue_size: int) -> float:
    """The window (seconds) just after the opening over which the pre-queue's holders are told
    to come back."""
    return min(PREQUEUE_MAX_SPREAD_S, max(1.0, prequeue_size / PREQUEUE_POLL_BUDGET_PER_S))
