"""A hand-made pair of run records whose every figure is known, for the statistics, summary
and report tests."""

from __future__ import annotations

from simulator.records import RegistrantOutcome, RunMeta, RunRecord, TimeSeries

PREQUEUE_ORDER = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]  # pre-queue registrant k is admitted at rank i
WALL_T0 = 1_900_000_000  # the run's t = 0 as Unix seconds (what admission tokens sign)


def known_run(mode: str, errors_per_s: int, peak: int) -> RunRecord:
    """40 s run, opening at t=10. Ten pre-queue registrants (joined 0..9) admitted in a
    shuffled order at 10..19; then 100 registrants joining at 10 + k*0.25, admitted FIFO, each
    waiting exactly k+1 seconds... except in direct mode, where the order is reversed. Through
    Gelombang each admission carries its ticket (join order) and signed second, and every
    registrant's first origin request is served half a second after admission."""
    queued = mode == "queued"
    series = TimeSeries.empty(40.0)
    outcomes = []
    for rank, k in enumerate(PREQUEUE_ORDER):
        outcomes.append(
            RegistrantOutcome(
                index=k,
                is_bot=False,
                arrival_t=float(k),
                joined_t=float(k),
                prequeue=True,
                admitted_t=10.0 + rank * 0.1,
                first_served_t=10.5 + rank * 0.1,
                completed_t=12.0 + rank * 0.1,
                ticket=k + 1 if queued else None,
                admitted_iat=WALL_T0 + int(10.0 + rank * 0.1) if queued else None,
            )
        )
    for k in range(100):
        joined = 10.0 + k * 0.25
        wait = float(k + 1)
        admitted = joined + wait if mode == "queued" else 200.0 - joined
        outcomes.append(
            RegistrantOutcome(
                index=10 + k,
                is_bot=False,
                arrival_t=joined,
                joined_t=joined,
                position_at_join=k + 1,
                eta_at_join_s=wait + 2.0,
                admitted_t=admitted,
                first_served_t=admitted + 0.5 if queued else admitted,
                completed_t=admitted + 1.0,
                ticket=11 + k if queued else None,
                admitted_iat=WALL_T0 + int(admitted) if queued else None,
            )
        )
        series.add("arrivals", joined)
    for t in range(40):
        series.set("origin_capacity", t, 20)
        series.peak("origin_inflight", t, peak if 10 <= t < 20 else 3)
        series.add("origin_errors", t, errors_per_s if t >= 10 else 0)
        series.set("queue_length", t, max(0, 50 - abs(t - 15) * 4))
        series.set("admit_rate_target", t, 4.0 if mode == "queued" else 0.0)
        series.add("admissions", t, 4 if 10 <= t < 38 else 0)
        series.add("rate_limited", t, 3 if queued and 10 <= t < 20 else 0)
    if queued:  # 30 429s: 20 to the one bot, 10 to a person polling from two tabs
        outcomes[10].is_bot, outcomes[10].rate_limited = True, 20
        outcomes[11].rate_limited = 10
    meta = RunMeta(
        mode=mode,
        scenario="known",
        seed=1,
        source="live",
        population=110,
        duration_s=40.0,
        opens_at_s=10.0,
        prequeue_s=10.0,
        admit_rate=4.0 if queued else None,
        admit_burst=4.0 if queued else None,
        max_active=0 if queued else None,
        session_ttl_s=30.0 if queued else None,
        abandon_after_s=45.0 if queued else None,
        origin_capacity=20,
    )
    return RunRecord.build(meta, series, outcomes)
