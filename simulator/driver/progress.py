"""The live run's progress lines: one a second while it goes on, and the last one from the
closed record, with the numbers the summary shows."""

from __future__ import annotations

from simulator.records import MODE_TITLES, RunRecord, RunTotals


def _counts(totals: RunTotals) -> str:
    """Arrived, admitted, completed, gave up and still trying: the summary's figures (every
    arrival is in exactly one of completed, gave up and still trying)."""
    gave_up = sum(n for reason, n in totals.gave_up.items() if reason != "run_ended")
    still_trying = totals.arrived - totals.completed - gave_up
    return (
        f"arrived {totals.arrived:,}  admitted {totals.admitted:,}"
        f"  completed {totals.completed:,}  gave up {gave_up:,}  still trying {still_trying:,}"
    )


def _errors(totals: RunTotals) -> str:
    return (
        f"5xx {totals.origin_errors:,}  timeouts {totals.origin_timeouts:,}"
        f"  429 {totals.rate_limited:,}"
    )


def progress_line(
    mode: str,
    t: float,
    totals: RunTotals,
    *,
    waiting: int,
    origin_inflight: int,
    origin_capacity: int | None,
) -> str:
    """One line per second while a run goes on: counts so far, and the origin right now."""
    capacity = "?" if origin_capacity is None else f"{origin_capacity}"
    return (
        f"[{MODE_TITLES[mode]} {t:5.1f}s] {_counts(totals)}  waiting {waiting:,}"
        f" | origin {origin_inflight}/{capacity} in flight  {_errors(totals)}"
    )


def final_progress_line(record: RunRecord, t: float) -> str:
    """The last line, from the closed record: the same numbers the summary shows."""
    capacity = record.meta.origin_capacity
    return (
        f"[{MODE_TITLES[record.meta.mode]} {t:5.1f}s] end: {_counts(record.totals)}"
        f" | origin peak {record.totals.peak_origin_inflight}/{capacity or '?'} in flight"
        f"  {_errors(record.totals)}"
    )
