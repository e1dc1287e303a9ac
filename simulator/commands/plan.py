"""Plan a wave offline: what admit_rate clears it in H hours, and what that asks of the origin.

    gelombang plan --scenario prakerja --hours 8 [--origin-capacity 30000]
    gelombang plan --scenario my-wave.toml --autopilot

With `--autopilot` it plans the wave run by the autopilot instead (`simulator.autopilot_plan`):
the bounds to set, when the autopilot settles and the target it settles at in every capacity
phase of the origin; exit code 1 when it never settles in some phase.

Runs the offline model (`simulator.model`, the queue's admission policy on virtual time) for a
range of admission rates, finds the lowest rate that clears the wave's backlog within the given
hours (bisection), and prints a table: admissions per second and per minute, when the backlog
clears, the longest queue, waits, and the origin concurrency (admitted sessions in progress)
against capacity. The search runs on a scaled-down copy of the wave (population, quota,
max_active and rate scaled together, which keeps the queue's shape); `--scale 1` searches at
full size. The chosen rate is then checked once at full size.

"The backlog clears" means the line is short enough that a new arrival waits at most
`--clear-wait` seconds (default 60), or the quota is filled.

It ends with what the plan asks of the whole system and the `gelombang wave put` command that
applies it, complete enough to create a new wave: the opening (`--opens-at`, else the
scenario's next opening time), the close as long after it as the scenario's, and the origin
(`--origin-url`; a registration.example placeholder, named as such, until given). One line
per model run; a run longer than a few seconds (the full-size check) says how far it got.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator import sizing
    from simulator.records import RunRecord
    from simulator.scenario import Scenario


PROGRESS_EVERY_S = 5.0
"""A run taking longer than this says how far it has got, every this many seconds."""


def _schedule(args: argparse.Namespace, scenario: Scenario) -> sizing.Schedule:
    """The times and URLs of the printed command: the options, else the scenario's next
    opening and placeholders."""
    from simulator import sizing

    default = sizing.next_opening(scenario, datetime.now(sizing.WIB))
    opens = default.opens_at
    if args.opens_at:
        try:
            opens = datetime.fromisoformat(args.opens_at)
        except ValueError:
            raise ValueError(f"--opens-at {args.opens_at!r} is not ISO 8601") from None
        if opens.tzinfo is None:
            raise ValueError("--opens-at needs a UTC offset, e.g. +07:00")
    clock = scenario.clock
    return sizing.Schedule(
        opens_at=opens,
        closes_at=opens + timedelta(seconds=clock.closes_at_s - clock.opens_at_s),
        origin_url=args.origin_url or default.origin_url,
        enqueue_jwks_url=args.enqueue_jwks_url or default.enqueue_jwks_url,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", default="prakerja", help="bundled scenario name or path to a .toml file"
    )
    parser.add_argument(
        "--hours",
        type=float,
        help="clear the backlog within this many hours (required unless --autopilot)",
    )
    parser.add_argument(
        "--autopilot",
        action="store_true",
        help="plan the wave with the autopilot on: the bounds to set, when it settles and its "
        "target in each capacity phase of the origin (the scenario's [wave.autopilot], or "
        "the defaults up to the wave's max_active)",
    )
    parser.add_argument(
        "--origin-capacity",
        type=int,
        help="origin concurrent sessions; sets max_active to 75%% of it (unset: the scenario's)",
    )
    parser.add_argument(
        "--population", type=int, help="registrants (unset: the scenario's population size)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        help="search on this fraction of the wave (unset: about 100,000 registrants)",
    )
    parser.add_argument(
        "--clear-wait", type=float, default=60.0, help="'cleared' = a new arrival waits <= this"
    )
    parser.add_argument("--seed", type=int, help="model seed (unset: the scenario's)")
    parser.add_argument("--report", type=Path, help="also write the report of the chosen rate here")
    parser.add_argument(
        "--opens-at",
        help="the wave's real opening for the command it prints (ISO 8601 with an offset, "
        "e.g. 2026-12-08T12:00:00+07:00; unset: the scenario's next opening time)",
    )
    parser.add_argument(
        "--origin-url", help="where admitted people go (unset: a registration.example placeholder)"
    )
    parser.add_argument(
        "--enqueue-jwks-url",
        help="the registration site's enqueue-token keys, for verified joins (unset: a "
        "placeholder)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


@dataclass(frozen=True)
class Trial:
    admit_rate: float  # full-size admissions per second
    clears_after_s: float | None  # after opening; None = not within the run
    quota_filled: bool
    admitted: int
    completed: int
    peak_queue: int
    wait_p95_s: float | None
    peak_active: int  # origin concurrency: admitted sessions in progress (full size)
    max_active: int  # the limit in force (full size; 0 = none)
    record: RunRecord | None = field(default=None, compare=False, repr=False)
    """The model run behind it (scaled down, or full size)."""


def mean_session_s(scenario: Scenario) -> float:
    from simulator import sessions

    return sessions.mean_session_s(scenario.origin)


def clears_after(record: RunRecord, rate: float, clear_wait_s: float) -> tuple[float | None, bool]:
    """Seconds after opening when the line first gets short again after its peak."""
    series, meta = record.series, record.meta
    admitted = record.totals.queue_admitted or record.totals.admitted
    quota_filled = bool(meta.quota) and admitted >= (meta.quota or 0)
    quota_t = None
    if quota_filled:
        last = max((k for k, n in enumerate(series.admissions) if n), default=None)
        quota_t = None if last is None else (last + 1) * series.step_s - meta.opens_at_s
    queue = series.queue_length
    opens_bin = series.bin(meta.opens_at_s)
    peak_k = max(range(opens_bin, len(queue)), key=queue.__getitem__, default=opens_bin)
    short = rate * clear_wait_s
    clear_t = None
    for k in range(peak_k, len(queue)):
        if queue[k] <= short:
            clear_t = max(0.0, k * series.step_s - meta.opens_at_s)
            break
    candidates = [t for t in (clear_t, quota_t) if t is not None]
    return (min(candidates) if candidates else None), quota_filled


def run_trial(
    scenario: Scenario,
    rate: float,
    scale: float,
    max_active: int,
    clear_wait_s: float,
    seed: int | None,
    progress: Any,
) -> Trial:
    from simulator.model import run_model
    from simulator.stats import percentile

    population = max(1, round(scenario.population_size * scale))
    quota = scenario.wave.quota
    scaled_quota = max(1, round(quota * scale)) if quota else 0
    scaled_active = max(1, round(max_active * scale)) if max_active else 0
    record = run_model(
        scenario,
        seed=seed,
        admit_rate=rate * scale,
        max_active=scaled_active,
        quota=scaled_quota,
        population=population,
        progress=progress,
    )
    clear_t, filled = clears_after(record, rate * scale, clear_wait_s)
    waits = [w for o in record.registrants if (w := o.wait_s) is not None]
    return Trial(
        admit_rate=rate,
        clears_after_s=clear_t,
        quota_filled=filled,
        admitted=round(record.totals.admitted / scale),
        completed=round(record.totals.completed / scale),
        peak_queue=round(record.totals.peak_queue_length / scale),
        wait_p95_s=percentile(waits, 0.95),
        peak_active=round(max(record.series.active, default=0) / scale),
        max_active=max_active,
        record=record,
    )


def _duration(seconds: float | None, missing: str = "–") -> str:
    if seconds is None:
        return missing
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _hours(seconds: float | None) -> str:
    return _duration(seconds, "not cleared")


def _minutes(seconds: float | None) -> str:
    return _duration(seconds)


def format_table(trials: list[Trial], scenario: Scenario, capacity: int) -> str:
    from simulator import sessions
    from simulator.flow import STEPS

    per_session = scenario.origin.requests_per_session / mean_session_s(scenario)
    per_request_s = sessions.flow_service_s(scenario.origin) / len(STEPS)
    header = (
        "admit_rate/s",
        "per min",
        "clears in",
        "peak queue",
        "wait p95",
        "origin sessions",
        "origin req/s",
        "req in flight",
        "of capacity",
    )
    rows = [header]
    for t in sorted(trials, key=lambda t: t.admit_rate):
        rows.append(
            (
                f"{t.admit_rate:,.1f}",
                f"{t.admit_rate * 60:,.0f}",
                _hours(t.clears_after_s) + (" (quota)" if t.quota_filled else ""),
                f"{t.peak_queue:,}",
                _minutes(t.wait_p95_s),
                f"{t.peak_active:,}",
                f"{t.peak_active * per_session:,.0f}",
                f"{t.peak_active * per_session * per_request_s:,.0f}",
                f"{100.0 * t.peak_active * per_session * per_request_s / capacity:.0f}%",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_autopilot(args: argparse.Namespace, scenario: Scenario) -> int:
    """`--autopilot`: two model runs with the controller (simulator.autopilot_plan)."""
    from simulator import autopilot_plan

    if args.population is not None:
        import dataclasses

        if args.population < 1:
            print("gelombang plan: --population must be >= 1", file=sys.stderr)
            return 2
        scenario = dataclasses.replace(scenario, population_size=args.population)
    try:
        plan = autopilot_plan.plan_autopilot(scenario, args.seed)
    except ValueError as exc:
        print(f"gelombang plan: {exc}", file=sys.stderr)
        return 2
    print(autopilot_plan.render(plan))
    if args.report is not None:
        from simulator.report import write_report

        for path in write_report([plan.run.record], args.report):
            print(f"wrote {path}", file=sys.stderr)
    return 0 if all(p.settles_after_s is not None for p in plan.phases) else 1


def run(args: argparse.Namespace) -> int:
    from simulator.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"gelombang plan: {exc}", file=sys.stderr)
        return 2
    if args.autopilot:
        return run_autopilot(args, scenario)
    if args.hours is None or args.hours <= 0:
        print("gelombang plan: --hours must be given and > 0", file=sys.stderr)
        return 2
    if args.population is not None:
        if args.population < 1:
            print("gelombang plan: --population must be >= 1", file=sys.stderr)
            return 2
        import dataclasses

        scenario = dataclasses.replace(scenario, population_size=args.population)
    capacity = args.origin_capacity or scenario.origin.capacity
    if capacity < 1:
        print("gelombang plan: --origin-capacity must be >= 1", file=sys.stderr)
        return 2
    # Cloudflare's rule of thumb: let at most 75% of the origin's capacity be active.
    max_active = int(capacity * 0.75) if args.origin_capacity else scenario.wave.max_active
    scale = args.scale or min(1.0, 100_000 / scenario.population_size)
    if not 0 < scale <= 1:
        print("gelombang plan: --scale must be in (0, 1]", file=sys.stderr)
        return 2
    window_s = args.hours * 3600.0
    if scenario.clock.opens_at_s + window_s > scenario.clock.duration_s:
        print(
            f"gelombang plan: --hours {args.hours} is longer than the scenario's run "
            f"({(scenario.clock.duration_s - scenario.clock.opens_at_s) / 3600:.1f} h after "
            "opening)",
            file=sys.stderr,
        )
        return 2

    try:
        schedule = _schedule(args, scenario)
    except ValueError as exc:
        print(f"gelombang plan: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    runs = 0

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    def trial(rate: float, scale_now: float) -> Trial:
        nonlocal runs
        runs += 1
        label = f"run {runs}: admit_rate {rate:,.1f}/s on {scale_now:.0%} of the wave"
        last_shown = [time.monotonic()]
        run_h = scenario.clock.duration_s / 3600

        def progress(t: float, arrivals: int) -> None:
            # one line per run; a long run (the full-size check) also says how far it is
            now = time.monotonic()
            if args.quiet or now - last_shown[0] < PROGRESS_EVERY_S:
                return
            last_shown[0] = now
            print(
                f"  {label}: {t / 3600:.1f} of {run_h:.1f} h of the wave modelled, "
                f"{arrivals:,} arrivals",
                file=sys.stderr,
                flush=True,
            )

        result = run_trial(
            scenario, rate, scale_now, max_active, args.clear_wait, args.seed, progress
        )
        elapsed = time.monotonic() - started
        say(f"  {label}: clears in {_hours(result.clears_after_s)} ({elapsed:.0f} s so far)")
        return result

    say(
        f"gelombang plan: scenario {scenario.name!r}, {scenario.population_size:,} registrants, "
        f"quota {scenario.wave.quota:,}, clear within {args.hours:g} h, "
        f"max_active {max_active:,} (origin capacity {capacity:,})"
    )
    mean_s = mean_session_s(scenario)
    ceiling = max_active / mean_s if max_active else math.inf
    guess = scenario.population_size / window_s

    def clears(t: Trial) -> bool:
        return t.clears_after_s is not None and t.clears_after_s <= window_s

    trials: list[Trial] = []

    def try_rate(rate: float) -> Trial:
        result = trial(rate, scale)
        trials.append(result)
        return result

    # Bracket [lo, hi]: lo does not clear in time, hi does; then bisect (geometrically).
    lo = max(0.01, guess / 8.0)
    hi: float | None = None
    best: float | None = None
    low_trial = try_rate(lo)
    for _ in range(6):
        if not clears(low_trial):
            break
        hi, lo = lo, lo / 4.0
        low_trial = try_rate(lo)
    if clears(low_trial):
        best = lo  # even a very low rate clears: the wave is small for this window
    else:
        if hi is None:
            hi = guess * 4.0
            if not clears(try_rate(hi)):
                say("  even the highest rate tried does not clear in time")
                hi = None
        if hi is not None:
            for _ in range(10):
                if hi / lo < 1.02:
                    break
                mid = math.sqrt(lo * hi)
                if clears(try_rate(mid)):
                    hi = mid
                else:
                    lo = mid
            best = hi
    final: Trial | None = None
    if best is not None:
        final = (
            trial(best, 1.0) if scale < 1.0 else min(trials, key=lambda t: abs(t.admit_rate - best))
        )
        if scale < 1.0:
            trials.append(final)
    print()
    print(format_table(trials, scenario, capacity))
    print()
    if final is None:
        print(
            f"No admit_rate up to {guess * 4.0:,.1f}/s clears the wave in {args.hours:g} h. "
            f"With max_active {max_active:,} and sessions of {_duration(mean_s)} on average "
            f"the origin can take at most {ceiling:,.1f} admissions/s; raise the origin "
            "capacity or allow more hours."
        )
        return 1
    quota_note = ""
    if final.quota_filled:
        quota_note = (
            f" The quota ({scenario.wave.quota:,}) is what limits this wave: any rate that "
            "fills it in time does, and a slower one spreads the places over more hours."
        )
    print(
        f"admit_rate {final.admit_rate:,.1f}/s ({final.admit_rate * 60:,.0f}/min) clears the wave "
        f"in {_hours(final.clears_after_s)} (full-size check).{quota_note}"
    )
    if final.admit_rate > ceiling:
        print(f"Note: above {ceiling:,.1f}/s, max_active ({max_active:,}) limits, not admit_rate.")
    if final.record is not None:
        from simulator import sizing

        print()
        sized = sizing.size(scenario, final.record, final.admit_rate, max_active, schedule=schedule)
        print(sizing.render(sized))
        if scenario.callbacks.enabled:
            from simulator.callback_plan import callback_plan

            print()
            print(callback_plan(scenario, final.record, final.admit_rate, max_active, args.seed))
    if args.report is not None:
        from simulator.model import run_model
        from simulator.report import write_report

        record = run_model(
            scenario, seed=args.seed, admit_rate=final.admit_rate, max_active=max_active
        )
        for path in write_report([record], args.report):
            print(f"wrote {path}", file=sys.stderr)
    return 0
