"""The figures a model run and a live run of the same scenario are compared on, each with one
definition for both sides (`simulator.model` and `simulator.driver` record them alike):

- `completed`: registrations finished at the origin;
- `admissions_per_s`: the queue's admissions (taken up or not) per second while the wave
  was open;
- `wait_p50_s`, `wait_p95_s`: from the latest join to the queue's admission, over the people
  who took their admission up (the report's nearest-rank percentile, `stats.percentile`);
- `waiting_at_<t>s`: the queue's waiting + pre-queue tickets at t (mean over 3 s);
- `eta_mdape`: median absolute percentage error of the ETA shown at join against the wait it
  promised, the time until admission reached the ticket (admitted or skipped), over
  everyone who joined after opening and waited longer than `min_wait_s`, not only those
  admitted.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from simulator.records import RunRecord
from simulator.stats import percentile


def waiting_at(record: RunRecord, t: float, window_s: float = 3.0) -> float:
    series = record.series
    bins = range(series.bin(t - window_s / 2), series.bin(t + window_s / 2) + 1)
    return statistics.fmean(series.queue_length[k] for k in bins)


def admissions_per_s(record: RunRecord, opens_s: float, closes_s: float) -> float:
    series = record.series
    first, last = series.bin(opens_s), series.bin(closes_s - 1e-9)
    return sum(series.admissions[first : last + 1]) / (closes_s - opens_s)


@dataclass(frozen=True)
class EtaError:
    mdape: float | None
    tickets: int
    """Tickets judged: joined after opening, reached by admission, waited > min_wait_s."""
    admitted_share: float


def eta_error(record: RunRecord, min_wait_s: float) -> EtaError:
    errors, admitted = [], 0
    for o in record.registrants:
        if o.prequeue or o.eta_at_join_s is None or o.reached_t is None or o.joined_t is None:
            continue
        actual = o.reached_t - o.joined_t
        if actual <= min_wait_s:
            continue
        errors.append(abs(o.eta_at_join_s - actual) / actual)
        admitted += o.admitted_t is not None
    if not errors:
        return EtaError(None, 0, 0.0)
    return EtaError(statistics.median(errors), len(errors), admitted / len(errors))


def figures(
    record: RunRecord, closes_s: float, times_s: tuple[float, ...], min_wait_s: float
) -> dict[str, float | None]:
    waits = [w for o in record.registrants if (w := o.wait_s) is not None]
    out: dict[str, float | None] = {
        "completed": float(record.totals.completed),
        "admissions_per_s": admissions_per_s(record, record.meta.opens_at_s, closes_s),
        "wait_p50_s": percentile(waits, 0.5),
        "wait_p95_s": percentile(waits, 0.95),
    }
    for t in times_s:
        out[f"waiting_at_{t:g}s"] = waiting_at(record, t)
    out["eta_mdape"] = eta_error(record, min_wait_s).mdape
    return out
