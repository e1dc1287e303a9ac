"""Drive synthetic registrants at a live origin, straight or through a live Gelombang queue.

    gelombang simulate --scenario laptop --mode both \
        --origin-url http://127.0.0.1:8090 --queue-url http://127.0.0.1:8080 --out reports/run1

Targets must be loopback. Every run is bounded by --max-registrants and --max-seconds. In queued
mode with an admin token (--admin-token or GELOMBANG_ADMIN_TOKEN) the wave (--wave, default the
scenario's) is created, or reconfigured, from the scenario to open `clock.opens_at_s` and close
`clock.closes_at_s` after the run starts; the command prints every setting it changes. A wave
opens once: one that has already opened cannot be made to open again, so the command stops and
says so, unless --recreate deletes it (and every ticket in it) first; or name a new wave. Without
a token the wave must exist and is driven as it is. Before a queued run `simulator.preflight`
checks that the wave exists,
that the origin protects that wave and that the queue believes each registrant's own address
(X-Forwarded-For; else per-address limits refuse the crowd): an error stops the command (exit
2), a warning is printed. Exit 1 when a run completed no registration at all, with the reasons.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.records import MODES

if TYPE_CHECKING:
    from simulator.autopilot_trace import AutopilotTrace
    from simulator.driver import DriverConfig, LiveResult, LiveRun
    from simulator.scenario import Scenario

QUEUE_TIMEOUT_S = 10.0
SHOWN_SETTINGS = (
    "admit_rate", "admit_burst", "max_active", "session_ttl_s", "quota", "prequeue_s",
    "abandon_after_s", "expected_session_s", "origin_url", "verified_joins", "enqueue_jwks_url",
)  # fmt: skip
"""The wave settings a run takes from the scenario, printed when they change."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="laptop", help="bundled scenario name or a .toml")
    parser.add_argument(
        "--mode",
        choices=["direct", "queued", "both"],
        default="both",
        help="direct: without Gelombang, straight at the origin; queued: through Gelombang; "
        "both: one after the other",
    )
    parser.add_argument("--origin-url", required=True, help="the origin (loopback only)")
    parser.add_argument("--queue-url", help="the queue service (loopback only; queued mode)")
    parser.add_argument("--out", type=Path, help="folder for run records and the report")
    parser.add_argument(
        "--max-registrants", type=int, default=5000, help="stop spawning after this many"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=120.0, help="hard stop of each run (wall seconds)"
    )
    parser.add_argument("--seed", type=int, help="population and arrival seed (scenario's)")
    parser.add_argument("--wave", help="the queue's wave to drive (default: the scenario's)")
    parser.add_argument(
        "--recreate",
        action="store_true",
        help="queued, with an admin token: delete the wave (and every ticket in it) and create "
        "it anew, when it has already opened (a wave opens once)",
    )
    parser.add_argument(
        "--no-completions-ok",
        action="store_true",
        help="exit 0 even if nobody completed (a run that only holds people waiting)",
    )
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("GELOMBANG_ADMIN_TOKEN"),
        help="queue admin token to configure the wave (env GELOMBANG_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--connections", type=int, default=2000, help="client connections open at once"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:

    import uvloop

    from simulator.driver import DriverConfig, NotLoopback, run_live
    from simulator.driver.config import gateway_secret
    from simulator.scenario import ScenarioError, load_scenario

    modes = ["direct", "queued"] if args.mode == "both" else [args.mode]
    try:
        scenario = load_scenario(args.scenario)
        configs = [
            DriverConfig(
                mode=mode,
                origin_url=args.origin_url,
                queue_url=args.queue_url,
                max_registrants=args.max_registrants,
                max_seconds=args.max_seconds,
                seed=args.seed,
                admin_token=args.admin_token,
                connection_limit=args.connections,
                progress=None if args.quiet else sys.stderr,
                wave=args.wave,
            )
            for mode in modes
        ]
        recreate = bool(getattr(args, "recreate", False))
        for config in configs:  # call-backs: the gateway needs the deployment's secret
            gateway_secret(config, scenario.callbacks.enabled)
    except (ScenarioError, NotLoopback, ValueError) as exc:
        print(f"gelombang simulate: {exc}", file=sys.stderr)
        return 2
    queued = next((c for c in configs if c.mode == "queued"), None)
    if queued is not None:
        ok = uvloop.run(preflight(scenario, queued, recreate=recreate))
        if not ok:
            return 2
    results: dict[str, LiveResult] = {}
    for config in configs:
        results[config.mode] = uvloop.run(run_live(scenario, config))
    if args.out:
        write_outputs(args.out, results)
    print(summary_text(results))
    return 0 if args.no_completions_ok else nothing_completed(results)


async def preflight(scenario: Scenario, config: DriverConfig, *, recreate: bool = False) -> bool:
    """Print what would make the run meaningless, and what the run will change; False when
    it should not start."""
    import aiohttp

    from simulator import preflight as checks
    from simulator.driver import LiveRun

    assert config.queue_url is not None
    wave = config.wave or scenario.wave.id
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        run = LiveRun(scenario, config, session)
        if run.admin is not None:
            admin = run.admin
            current = await admin.view(wave)
            if current is not None and has_opened(current, time.time()):
                if not recreate:
                    print(f"gelombang simulate: {opened_message(wave, current)}",
                          file=sys.stderr)  # fmt: skip
                    return False
                people = await admin.delete(wave)
                print(f"gelombang simulate: deleted wave {wave} ({people}) to create it anew",
                      file=sys.stderr)  # fmt: skip
            for line in describe_changes(run, current, recreate=recreate):
                print(f"gelombang simulate: {line}", file=sys.stderr)
            # (re)create the wave an hour ahead: probe joins then make no ticket; the run
            # configures it again to open relative to its own start
            try:
                await run.configure_wave(time.time() + 3600)
            except RuntimeError as exc:
                print(f"gelombang simulate: {exc}", file=sys.stderr)
                return False
        result = await checks.check(session, config.queue_url, config.origin_url, wave)
    for warning in result.warnings:
        print(f"gelombang simulate: warning: {warning}", file=sys.stderr)
    for error in result.errors:
        print(f"gelombang simulate: {error}", file=sys.stderr)
    return not result.errors


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def has_opened(view: dict[str, Any], now: float) -> bool:
    """Whether the wave has opened (its opening is past: it cannot open again)."""
    return _when(view["wave"]["opens_at"]).timestamp() <= now


def opened_message(wave: str, view: dict[str, Any]) -> str:
    opened = _when(view["wave"]["opens_at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"wave {wave} opened at {opened} (it is {view['state']}); a wave opens once, so this "
        "run cannot make it open again with a pre-queue. Rehearse on a new wave (--wave "
        f"{wave}-2: the run creates it), or add --recreate to delete {wave} and every ticket "
        "in it first."
    )


def describe_changes(
    run: LiveRun, current: dict[str, Any] | None, *, recreate: bool = False
) -> list[str]:
    """What the run will do to the wave, in words: its opening and closing relative to the
    run's start, and every other setting that changes (old -> new; `current`: the wave as it
    is, or was before --recreate deleted it)."""
    scenario, wave = run.scenario, run.wave
    clock = scenario.clock
    new = run.definition(0.0)
    verb = "creates" if current is None else "re-creates" if recreate else "reconfigures"
    lines = [
        f"the run {verb} wave {wave} from scenario {scenario.name!r}: it opens "
        f"{clock.opens_at_s:g} s after the run starts (pre-queue from {scenario.wave.prequeue_s:g}"
        f" s before that) and closes {clock.closes_at_s:g} s after it"
    ]
    old = current["wave"] if current is not None else {}
    changed = [
        f"{name} {_shown(old[name])} -> {_shown(new[name])}" if name in old
        else f"{name} {_shown(new[name])}"
        for name in SHOWN_SETTINGS
        if name in new and old.get(name) != new[name]
    ]  # fmt: skip
    if changed:
        lines.append(("settings: " if current is None else "changes: ") + ", ".join(changed))
    elif current is not None:
        lines.append("no other setting changes")
    return lines


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def nothing_completed(results: dict[str, LiveResult]) -> int:
    """1, saying why, when a run completed no registration at all."""
    status = 0
    for mode, result in results.items():
        if result.record.totals.completed:
            continue
        reasons = ", ".join(
            f"{count} {detail}" for detail, count in result.stats.give_up_details.most_common(4)
        )
        print(
            f"gelombang simulate: the {mode} run completed no registration "
            f"({result.record.totals.arrived} arrived; {reasons or 'none gave up: none admitted'})",
            file=sys.stderr,
        )
        status = 1
    return status


def write_outputs(
    out: Path, results: dict[str, LiveResult], autopilot: AutopilotTrace | None = None
) -> None:
    """`run-<mode>.json` for each run, then the report (JSON + HTML) from them; with the
    autopilot's trace (the demo), `autopilot.json` and its charts in the report."""
    out.mkdir(parents=True, exist_ok=True)
    for mode, result in results.items():
        result.record.save(out / f"run-{mode}.json")
    try:
        from simulator import report
    except ImportError:
        print("(simulator.report is not available: run records only)", file=sys.stderr)
        return
    records = [results[m].record for m in MODES if m in results]
    paths = report.write_report(records, out, autopilot=autopilot)
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)


def summary_text(results: dict[str, LiveResult]) -> str:
    """The terminal summary of the runs, in report order: the page's verdict and figures."""
    from simulator.stats import summarise
    from simulator.summary import render_text

    return render_text([summarise(results[m].record) for m in MODES if m in results])
