"""The statistics of a run: pure functions, no drawing and no HTML.

The live driver checks admission order with `kendall_tau_b`; the report, the terminal summary
and `gelombang plan` compute their figures here, so every consumer shows the same numbers.

- `percentile(values, q)`: nearest rank, the smallest value with at least q of the values at
  or below it.
- `count_inversions(values)`: pairs i < j with values[i] > values[j], in O(n log n).
- `kendall_tau_b(xs, ys)`: Kendall's rank correlation, ties handled as in Knight 1966,
  O(n log n).
- `ranks(values)`: 0-based rank of each value (ties broken by position).
- `waits(record)` (in line: joining to admission; through Gelombang only), `origin_waits`
  (first attempt to the first request the origin served: one clock for both runs),
  `eta_errors(record)`, `eta_bias_by_third(record)`: per-registrant samples the report
  summarises.
- `fairness(record)`: Kendall's tau-b between join order and admission order over registrants
  who joined after opening and were admitted (FIFO gives tau = 1, less the ties of admissions
  in the same second); the share of overtaken pairs and the largest rank displacement; for the
  pre-queue block, whether every member was admitted before every later arrival, and tau
  inside the block (a uniform shuffle gives tau near 0). A live run is judged on the queue's
  own record: join order is the ticket number,
  admission the second signed into the token (`iat`); the model on its exact virtual times.
- `rate_limited_bot_share(record)`: the share of 429s that went to bots.
- `summarise(record)`: every figure of one run as plain data (what `report.json` holds).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from simulator.records import MODE_TITLES, RegistrantOutcome, RunRecord

# Named reasons get their own summary figure; the rest are "other".
NAMED_GIVE_UPS = ("errors", "balked", "reneged", "run_ended")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, q in [0, 1]: the ceil(q*n)-th smallest value (1-based)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be in [0, 1]")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def count_inversions(values: Sequence[float]) -> int:
    """Pairs i < j with values[i] > values[j] (strictly), by bottom-up merge sort."""
    n = len(values)
    src, dst = list(values), [0.0] * n
    inversions, width = 0, 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid, hi = min(lo + width, n), min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if src[j] < src[i]:
                    dst[k] = src[j]
                    inversions += mid - i
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            dst[k : k + mid - i] = src[i:mid]
            k += mid - i
            dst[k : k + hi - j] = src[j:hi]
        src, dst = dst, src
        width *= 2
    return inversions


def _tied_pairs(sorted_values: Sequence[Any]) -> int:
    ties, run = 0, 1
    for a, b in itertools.pairwise(sorted_values):
        if a == b:
            run += 1
        else:
            ties += run * (run - 1) // 2
            run = 1
    return ties + run * (run - 1) // 2


def kendall_tau_b(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b of paired samples in O(n log n); None if undefined (n < 2 or constant)."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys must have the same length")
    n = len(xs)
    if n < 2:
        return None
    pairs = sorted(zip(xs, ys, strict=True))
    n0 = n * (n - 1) // 2
    n1 = _tied_pairs([p[0] for p in pairs])
    n3 = _tied_pairs(pairs)
    ys_in_x_order = [p[1] for p in pairs]
    # Discordant pairs: inversions of y in x order (pairs tied in x are sorted by y: none).
    discordant = count_inversions(ys_in_x_order)
    n2 = _tied_pairs(sorted(ys))
    denominator = math.sqrt((n0 - n1) * (n0 - n2))
    if denominator == 0:
        return None
    concordant_minus_discordant = n0 - n1 - n2 + n3 - 2 * discordant
    return concordant_minus_discordant / denominator


def ranks(values: Sequence[float]) -> list[int]:
    """The 0-based rank of each value; equal values are ranked in order of position."""
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0] * len(values)
    for rank, i in enumerate(order):
        result[i] = rank
    return result


def waits(record: RunRecord) -> list[float]:
    """The wait in line of every admitted registrant: joining to the queue's admission.
    Through Gelombang only: without it there is no line (empty)."""
    if record.meta.mode != "queued":
        return []
    return [w for o in record.registrants if (w := o.wait_s) is not None]


def origin_waits(record: RunRecord) -> list[float]:
    """First attempt (arriving, or the first join) to the first request the origin served:
    the same clock in both runs (empty for the model, which does not time requests)."""
    return [
        o.first_served_t - o.arrival_t for o in record.registrants if o.first_served_t is not None
    ]


def eta_bias_by_third(record: RunRecord) -> list[float | None]:
    """Median of actual wait minus estimate for the first, middle and last third of the
    post-opening joiners (by join time): a bias for late joiners shows here, not in the
    overall median."""
    samples = sorted(
        (o.joined_t or 0.0, o.wait_s - o.eta_at_join_s)
        for o in record.registrants
        if o.wait_s is not None and o.eta_at_join_s is not None and not o.prequeue
        and record.meta.mode == "queued"
    )  # fmt: skip
    n = len(samples)
    thirds = [samples[k * n // 3 : (k + 1) * n // 3] for k in range(3)]
    return [percentile([e for _, e in part], 0.5) for part in thirds]


def rate_limited_bot_share(record: RunRecord) -> float | None:
    """The share of the 429s that went to bots (scripted clients, joki accounts)."""
    total = sum(o.rate_limited for o in record.registrants)
    if not total:
        return None
    return sum(o.rate_limited for o in record.registrants if o.is_bot) / total


def eta_errors(record: RunRecord) -> list[float]:
    """Actual wait minus the wait estimated at joining, for registrants who joined after
    opening (the pre-queue shows no estimate) and were admitted (through Gelombang only:
    without it nobody estimates anything)."""
    if record.meta.mode != "queued":
        return []
    return [
        o.wait_s - o.eta_at_join_s
        for o in record.registrants
        if o.wait_s is not None and o.eta_at_join_s is not None and not o.prequeue
    ]


def post_opening_admitted(record: RunRecord) -> list[RegistrantOutcome]:
    """Admitted registrants who joined after opening: the ones first come, first served
    applies to."""
    opens = record.meta.opens_at_s
    return [
        o
        for o in record.registrants
        if o.admitted_t is not None
        and not o.prequeue
        and o.joined_t is not None
        and o.joined_t >= opens
    ]


def signed_order(outcomes: Sequence[RegistrantOutcome]) -> bool:
    """Whether every outcome carries the queue's own record of its admission (ticket and
    signed second): live runs through Gelombang."""
    return bool(outcomes) and all(
        o.ticket is not None and o.admitted_iat is not None for o in outcomes
    )


def join_and_admission_keys(
    outcomes: Sequence[RegistrantOutcome], signed: bool
) -> tuple[list[float], list[float]]:
    """(join order, admission order) keys: the queue's ticket numbers and signed seconds, or
    (the model) exact join and admission times."""
    if signed:
        return [float(o.ticket or 0) for o in outcomes], [
            float(o.admitted_iat or 0) for o in outcomes
        ]
    return [o.joined_t or 0.0 for o in outcomes], [o.admitted_t or 0.0 for o in outcomes]


def fairness(record: RunRecord) -> dict[str, Any]:
    later = post_opening_admitted(record)
    block = [o for o in record.registrants if o.admitted_t is not None and o.prequeue]
    signed = signed_order(later + block)
    join_key, admit_key = join_and_admission_keys(later, signed)
    tau = kendall_tau_b(join_key, admit_key)
    pairs = len(later) * (len(later) - 1) // 2
    # strictly later: two admissions in the same signed second overtook nobody
    overtaken = count_inversions([a for _, a in sorted(zip(join_key, admit_key, strict=True))])
    displacement = None  # nobody admitted after opening: nothing was displaced or kept
    if later:
        in_join_order = sorted(zip(join_key, admit_key, strict=True))
        admit_rank = ranks([a for _, a in in_join_order])  # same second: join order
        displacement = max(abs(k - r) for k, r in enumerate(admit_rank))
    _, block_admitted = join_and_admission_keys(block, signed)
    last_block = max(block_admitted, default=None)
    first_later = min(admit_key, default=None)
    block_first = None
    if last_block is not None and first_later is not None:
        # the same signed second counts as in order: whole seconds cannot tell more, and the
        # queue admits the whole pre-queue block before any later ticket (guarantee 4)
        block_first = last_block <= first_later
    # inside the block, the finer times: the whole block is often admitted within a second
    block_tau = kendall_tau_b(
        [o.joined_t or 0.0 for o in block], [o.admitted_t or 0.0 for o in block]
    )
    return {
        "post_open_admitted": len(later),
        "tau_b": tau,
        "overtaken_pair_share": (overtaken / pairs) if pairs else None,
        "max_rank_displacement": displacement,
        "prequeue_admitted": len(block),
        "prequeue_admitted_first": block_first,
        "prequeue_tau_b": block_tau,
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def gave_up_other(gave_up: dict[str, int]) -> int:
    """Registrants who stopped for a reason without its own figure (rejected, abandoned)."""
    return sum(n for reason, n in gave_up.items() if reason not in NAMED_GIVE_UPS)


def summarise(record: RunRecord) -> dict[str, Any]:
    """Every figure of one run. Keys are stable (`report.json` readers depend on them)."""
    meta, totals, series = record.meta, record.totals, record.series
    wait_values = waits(record)
    origin_wait_values = origin_waits(record)
    to_complete = [
        o.completed_t - o.arrival_t for o in record.registrants if o.completed_t is not None
    ]
    errors = eta_errors(record)
    capacity = meta.origin_capacity or max(series.origin_capacity, default=0) or None
    peak = totals.peak_origin_inflight or max(series.origin_inflight, default=0)
    gave_up = dict(totals.gave_up)
    fair = fairness(record)
    return {
        "mode": meta.mode,
        "run": MODE_TITLES[meta.mode],
        "scenario": meta.scenario,
        "source": meta.source,
        "seed": meta.seed,
        "population": meta.population,
        "sample_every": meta.sample_every,
        "settings": {
            "registrants": meta.population,
            "seed": meta.seed,
            "duration_s": meta.duration_s,
            "opens_at_s": meta.opens_at_s,
            "admit_rate": meta.admit_rate,
            "admit_burst": meta.admit_burst,
            "max_active": meta.max_active,
            "session_ttl_s": meta.session_ttl_s,
            "quota": meta.quota,
            "prequeue_s": meta.prequeue_s,
            "abandon_after_s": meta.abandon_after_s,
            "origin_capacity": capacity,
        },
        "arrived": totals.arrived,
        "joined": totals.joined,
        "admitted": totals.admitted,
        "queue_admitted": totals.admitted if meta.mode == "queued" else None,
        "reached_origin": sum(o.first_served_t is not None for o in record.registrants)
        if meta.source == "live"
        else None,
        "completed": totals.completed,
        "gave_up": gave_up,
        "gave_up_errors": gave_up.get("errors", 0),
        "gave_up_balked_reneged": gave_up.get("balked", 0) + gave_up.get("reneged", 0),
        "gave_up_other": gave_up_other(gave_up),
        "still_trying_at_end": gave_up.get("run_ended", 0),
        "origin_errors": totals.origin_errors,
        "origin_timeouts": totals.origin_timeouts,
        "rate_limited": totals.rate_limited,
        "rate_limited_bot_share": _round(rate_limited_bot_share(record), 4),
        "bot_share": _round(sum(o.is_bot for o in record.registrants) / len(record.registrants), 4)
        if record.registrants
        else None,
        "requests": totals.requests,
        "peak_live_registrants": totals.peak_live_registrants,
        "peak_origin_inflight": peak,
        "origin_capacity": capacity,
        "peak_over_capacity": _round(peak / capacity) if capacity else None,
        "peak_queue_length": totals.peak_queue_length,
        "wait_s": {
            "p50": _round(percentile(wait_values, 0.50)),
            "p95": _round(percentile(wait_values, 0.95)),
            "p99": _round(percentile(wait_values, 0.99)),
            "n": len(wait_values),
        },
        "origin_wait_s": {
            "p50": _round(percentile(origin_wait_values, 0.50)),
            "p95": _round(percentile(origin_wait_values, 0.95)),
            "p99": _round(percentile(origin_wait_values, 0.99)),
            "n": len(origin_wait_values),
        },
        "time_to_complete_s": {
            "p50": _round(percentile(to_complete, 0.50)),
            "p95": _round(percentile(to_complete, 0.95)),
            "n": len(to_complete),
        },
        "eta_error_s": {
            "median": _round(percentile(errors, 0.5)),
            "median_abs": _round(percentile([abs(e) for e in errors], 0.5)),
            "p90_abs": _round(percentile([abs(e) for e in errors], 0.9)),
            "n": len(errors),
            **dict(
                zip(
                    ("early_median", "middle_median", "late_median"),
                    map(_round, eta_bias_by_third(record)),
                    strict=True,
                )
            ),
        },
        "callbacks": callback_summary(totals.callbacks),
        "fairness": {
            # The overtaken share is small when it matters (0.04 %): keep its digits.
            k: _round(v, 6 if k == "overtaken_pair_share" else 3) if isinstance(v, float) else v
            for k, v in fair.items()
        },
    }


def callback_summary(totals: dict[str, Any] | None) -> dict[str, Any] | None:
    """The call-back figures (`simulator.callback_stats`) and the share of those called back
    who came back in time."""
    if not totals:
        return None
    called = totals.get("called_back", 0)
    in_time = totals.get("came_back_in_time", 0)
    return {**totals, "in_time_share": _round(in_time / called, 4) if called else None}


class SignedAdmission(Protocol):
    """An admission as the queue signed it (`simulator.driver.Admission`)."""

    @property
    def prequeue(self) -> bool: ...
    @property
    def ticket(self) -> int | None: ...
    @property
    def issued_at(self) -> int | None: ...


@dataclass(frozen=True)
class OrderCheck:
    """How well admission kept join order after opening (pre-queue tickets excluded)."""

    admitted: int  # post-opening admissions with claims
    tau_b: float | None  # Kendall's tau-b, ticket sequence vs signed admission second
    overtaken_pairs: int  # pairs admitted in a strictly earlier second despite joining later
    prequeue_first: bool  # every pre-queue admission came no later than the first other one


def admission_order(admissions: Sequence[SignedAdmission]) -> OrderCheck:
    """Fairness: the queue's ticket sequence (join order) against the admission time it
    signed into each token. Tokens carry whole seconds, so admissions in the same second tie;
    tau-b counts ties, and `overtaken_pairs` counts only real inversions (0 is first come,
    first served)."""
    later = sorted(
        (a for a in admissions if not a.prequeue and a.ticket is not None and a.issued_at),
        key=lambda a: a.ticket or 0,
    )
    tickets = [float(a.ticket or 0) for a in later]
    seconds = [float(a.issued_at or 0) for a in later]
    early = [a.issued_at for a in admissions if a.prequeue and a.issued_at]
    prequeue_first = not early or not seconds or max(early) <= min(seconds)
    overtaken = count_inversions(seconds)
    return OrderCheck(len(later), kendall_tau_b(tickets, seconds), overtaken, prequeue_first)
