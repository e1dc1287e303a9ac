"""How registrants behave: pure decisions, deterministic given the draws.

Shared by the registrant's journey (`simulator.journey`: the live driver and the Locust users)
and the offline model, so every tool makes the same choices. Nothing here does I/O or reads
the clock: callers pass the draws, the registrant's traits and what the server said, and get a
number of seconds or a yes/no back.

Draws come through the `Draw` protocol: `random()`, `uniform(low, high)` and
`lognormal(median, sigma)`. A person of the live driver or of Locust draws with `PersonDraws`
(a seeded `random.Random`); the model with its own table-backed draws
(`simulator.model.draws.Draws`), which keep millions of decisions fast. Every function below
draws the same way from either.

Interface (every function takes `rng: Draw` first where it draws):

- `poll_delay_s(rng, r, poll_after_ms, params)`: seconds until the next status poll.
  Humans follow `poll_after_ms` with jitter; manual refreshers reload every U(10, 60) s;
  bots poll every U(0.2, 1) s whatever the server says. `poll_gaps(r, poll_after_ms,
  params)` is the range those gaps are drawn from (the model's "time to the next poll").
- `retry_delay_s(rng, r, attempt, params, retry_after_s=None)`: seconds before retry number
  `attempt` (1 = first retry) after an error, or `None` when the registrant gives up.
  Humans keep going with probability p_k = 0.95 * 0.85^(k-1); their delay is 50% "F5"
  U(1, 5) s and 50% lognormal (median 30 s, sigma 1), never shorter than a Retry-After the
  waiting page honours. Scripted clients never give up and use full jitter
  U(0, min(cap, base * 2^k)) ignoring Retry-After.
- `balks(rng, r, state, eta_s, params)`: a person told a waiting ETA W leaves at once with
  P = 1 - exp(-W / 6 h); nobody balks at the pre-queue's countdown, bots never balk.
- `reneges(r, waited_s)`: patience exhausted (patience is a registrant trait; bots have none
  to lose). `patience_from(joined_t, opens_at_s)`: when the patience clock starts (the latest
  join, and for the pre-queue the opening: people there were told to wait for it).
- `abandons_silently(rng, params)`: a leaver closes the tab without calling `leave`.
- `returns_later_s(rng, params)`: after reneging, comes back after this many seconds (bringing
  the old ticket, so a place still held is handed back), or None. Balkers do not come back.
- `drops_out_in_flow(rng, params)`: abandons the registration flow after admission.
- `open_tabs(r)`: tabs/devices this registrant polls from.
- `opts_in(rng, r, callbacks)`: a person who stayed in line (did not balk) leaves it to be
  called back: the contact kind they give, or None (bots never do). Decided once, at the join.
- `callback_return_s(rng, callbacks)`: after the first message (their turn is near, or it is
  their turn), comes back through the return link after this many seconds, or None: never.

`BehaviourParams` holds every parameter; scenarios fill it from their `[behaviour]` table.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

from queue_service.protocol import HolderState
from simulator.callback_params import CallbackParams


class Draw(Protocol):
    """The draws behaviour needs: uniform on [0, 1), uniform on [low, high], lognormal."""

    def random(self) -> float: ...
    def uniform(self, a: float, b: float) -> float: ...
    def lognormal(self, median: float, sigma: float) -> float: ...


class PersonDraws(random.Random):
    """One person's draws in a live run (the driver, Locust): a seeded `random.Random`."""

    def lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(sigma * self.gauss(0.0, 1.0))


class Traits(Protocol):
    """The registrant traits behaviour depends on (`simulator.registrants.Registrant` has them)."""

    @property
    def is_bot(self) -> bool: ...
    @property
    def manual_refresher(self) -> bool: ...
    @property
    def retry_habit(self) -> str: ...
    @property
    def patience_s(self) -> float: ...
    @property
    def tabs(self) -> int: ...


@dataclass(frozen=True)
class BehaviourParams:
    # --- polling while waiting
    default_poll_s: float = 20.0  # auto-poll period when the server gives no hint [E]
    poll_jitter: float = 0.2  # humans poll at poll_after * U(1 - j, 1 + j)
    manual_refresh_min_s: float = 10.0  # manual refreshers: U(min, max) [E]
    manual_refresh_max_s: float = 60.0
    bot_poll_min_s: float = 0.2  # scripted clients: fixed 0.2-1 s polling, no backoff [E]
    bot_poll_max_s: float = 1.0
    # --- retrying after an error (5xx, timeout)
    persistence_first: float = 0.95  # p_1 [E]
    persistence_decay: float = 0.85  # p_k = p_1 * decay^(k-1) [E]
    f5_share: float = 0.5  # share of human retries that are an immediate "F5" [E]
    f5_min_s: float = 1.0
    f5_max_s: float = 5.0
    retry_median_s: float = 30.0  # the other human retries: lognormal(median, sigma) [E]
    retry_sigma: float = 1.0
    jitter_base_s: float = 1.0  # scripted clients: full jitter, base and cap [E]
    jitter_cap_s: float = 60.0
    # --- coming back later after giving up
    return_later_p: float = 0.8  # [E]
    return_median_s: float = 3 * 3600.0  # lognormal median [E]
    return_sigma: float = 1.0
    # --- abandonment
    balk_scale_s: float = 6 * 3600.0  # P(balk | ETA W) = 1 - exp(-W / scale) [E]
    silent_abandon_share: float = 0.5  # leavers who do not say so (30-70%) [E]
    in_flow_dropout: float = 0.05  # abandon the registration flow after admission [E]

    def __post_init__(self) -> None:
        for name in (
            "poll_jitter",
            "persistence_first",
            "persistence_decay",
            "f5_share",
            "return_later_p",
            "silent_abandon_share",
            "in_flow_dropout",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"behaviour.{name} must be in [0, 1], got {value}")
        pairs = (
            ("manual_refresh_min_s", "manual_refresh_max_s"),
            ("bot_poll_min_s", "bot_poll_max_s"),
            ("f5_min_s", "f5_max_s"),
        )
        for low, high in pairs:
            if not 0.0 < getattr(self, low) <= getattr(self, high):
                raise ValueError(f"need 0 < behaviour.{low} <= behaviour.{high}")
        for name in (
            "default_poll_s",
            "retry_median_s",
            "jitter_base_s",
            "jitter_cap_s",
            "return_median_s",
            "balk_scale_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"behaviour.{name} must be > 0")


DEFAULT_PARAMS = BehaviourParams()


def poll_gaps(
    r: Traits, poll_after_ms: float | None, params: BehaviourParams = DEFAULT_PARAMS
) -> tuple[float, float, float]:
    """The poll gaps of registrant `r` told `poll_after_ms`: U(low, high) x scale seconds."""
    if r.is_bot:
        return params.bot_poll_min_s, params.bot_poll_max_s, 1.0
    if r.manual_refresher:
        return params.manual_refresh_min_s, params.manual_refresh_max_s, 1.0
    base = params.default_poll_s if poll_after_ms is None else poll_after_ms / 1000.0
    return 1.0 - params.poll_jitter, 1.0 + params.poll_jitter, base


def poll_delay_s(
    rng: Draw,
    r: Traits,
    poll_after_ms: float | None,
    params: BehaviourParams = DEFAULT_PARAMS,
) -> float:
    low, high, scale = poll_gaps(r, poll_after_ms, params)
    return scale * rng.uniform(low, high)


def persistence(attempt: int, params: BehaviourParams = DEFAULT_PARAMS) -> float:
    """Probability a human tries retry number `attempt` (1-based) after an error."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    return params.persistence_first * params.persistence_decay ** (attempt - 1)


def retry_delay_s(
    rng: Draw,
    r: Traits,
    attempt: int,
    params: BehaviourParams = DEFAULT_PARAMS,
    retry_after_s: float | None = None,
) -> float | None:
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if r.retry_habit == "full_jitter" or r.is_bot:
        # Scripted: never gives up, ignores Retry-After, exponential window with full jitter.
        window = min(params.jitter_cap_s, params.jitter_base_s * 2.0 ** min(attempt, 30))
        return rng.uniform(0.0, window)
    if rng.random() >= persistence(attempt, params):
        return None
    if rng.random() < params.f5_share:
        delay = rng.uniform(params.f5_min_s, params.f5_max_s)
    else:
        delay = rng.lognormal(params.retry_median_s, params.retry_sigma)
    # The waiting page's script honours Retry-After; a human cannot retry sooner through it.
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def balk_probability(eta_s: float, params: BehaviourParams = DEFAULT_PARAMS) -> float:
    return 1.0 - math.exp(-max(0.0, eta_s) / params.balk_scale_s)


BALKING_STATES = frozenset({HolderState.WAITING, HolderState.CLOSING})
"""Answers that show a wait to balk at (the pre-queue's ETA is the time to the opening)."""


def balks(
    rng: Draw,
    r: Traits,
    state: HolderState | None,
    eta_s: float | None,
    params: BehaviourParams = DEFAULT_PARAMS,
) -> bool:
    if r.is_bot or eta_s is None or state not in BALKING_STATES:
        return False
    return rng.random() < balk_probability(eta_s, params)


def reneges(r: Traits, waited_s: float) -> bool:
    return not r.is_bot and waited_s >= r.patience_s


def patience_from(joined_t: float, opens_at_s: float) -> float:
    return max(joined_t, opens_at_s)


def abandons_silently(rng: Draw, params: BehaviourParams = DEFAULT_PARAMS) -> bool:
    return rng.random() < params.silent_abandon_share


def returns_later_s(rng: Draw, params: BehaviourParams = DEFAULT_PARAMS) -> float | None:
    if rng.random() >= params.return_later_p:
        return None
    return rng.lognormal(params.return_median_s, params.return_sigma)


def drops_out_in_flow(rng: Draw, params: BehaviourParams = DEFAULT_PARAMS) -> bool:
    return rng.random() < params.in_flow_dropout


def open_tabs(r: Traits) -> int:
    return max(1, r.tabs)


def opts_in(rng: Draw, r: Traits, callbacks: CallbackParams) -> str | None:
    if r.is_bot or not callbacks.enabled or rng.random() >= callbacks.optin_share:
        return None
    pick = rng.random()
    mix = callbacks.channel_mix
    return next((kind for kind, upto in mix if pick < upto), mix[-1][0])


def callback_return_s(rng: Draw, callbacks: CallbackParams) -> float | None:
    if rng.random() < callbacks.never_return_share:
        return None
    return rng.lognormal(callbacks.return_median_s, callbacks.return_sigma)
