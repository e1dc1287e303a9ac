"""`python -m loadtests.bench [BENCHMARK ...]`: run benchmarks, print one table, exit 0 when
every target is met, 1 when one is missed, 2 when a benchmark could not run."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from loadtests.bench import benchmarks
from loadtests.bench.benchmarks import BENCHMARKS, ON_REQUEST, WRK_BENCHMARKS, Options
from loadtests.bench.report import Row, save_json, table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__)
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="BENCHMARK",
        help=f"{', '.join(BENCHMARKS)} (all of these), or {', '.join(ON_REQUEST)} (when named)",
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; median kept (3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--tickets", type=int, default=100_000, help="waiting tickets (100000)")
    parser.add_argument("--sample", type=int, default=10_000, help="tickets polled (10000)")
    parser.add_argument("--sizes", default="10000,1000000", help="queue sizes for `scale`")
    parser.add_argument("--admission-seconds", type=float, default=60, help="(60)")
    parser.add_argument("--admission-rate", type=float, default=500, help="per second (500)")
    parser.add_argument("--admission-workers", type=int, default=4, help="processes (4)")
    parser.add_argument(
        "--driver-registrants", type=int, default=12_000, help="for `driver` (12000)"
    )
    parser.add_argument(
        "--model-population", type=int, default=6_000_000, help="for `model` (6000000)"
    )
    parser.add_argument(
        "--flood-connections",
        default="3000,6000",
        help="for `overload`: flood sizes, one row each (%(default)s)",
    )
    parser.add_argument(
        "--idle-waves", default="100,400", help="for `idle`: numbers of waves (%(default)s)"
    )
    parser.add_argument(
        "--reclaim-tickets", type=int, default=10_000, help="for `reclaim`: per round (10000)"
    )
    parser.add_argument("--reclaim-rounds", type=int, default=3, help="for `reclaim` (3)")
    parser.add_argument("--peer-url", help="for `peer`: the peer waiting room's base URL")
    parser.add_argument("--peer-pid", type=int, help="for `peer`: its server's pid (pinned)")
    parser.add_argument("--peer-redis-pid", type=int, help="for `peer`: its Redis's pid (pinned)")
    parser.add_argument(
        "--peer-status-path", default="/api/waiting-room/status", help="for `peer` (%(default)s)"
    )
    parser.add_argument("--peer-cookie", default="__wr_id", help="for `peer` (%(default)s)")
    parser.add_argument("--server-cpu", default="0", help="CPU for the server (0)")
    parser.add_argument(
        "--client-cpu", default="1", help="CPU for wrk (and Redis), the driver, the model (1)"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    unknown = set(args.benchmarks) - set(BENCHMARKS) - set(ON_REQUEST)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = args.benchmarks or list(BENCHMARKS)
    if set(chosen) & {*WRK_BENCHMARKS, *ON_REQUEST} and shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    options = Options(
        duration_s=args.duration,
        runs=args.runs,
        connections=args.connections,
        tickets=args.tickets,
        sample=args.sample,
        sizes=[int(s) for s in args.sizes.split(",") if s.strip()],
        admission_s=args.admission_seconds,
        admission_rate=args.admission_rate,
        admission_workers=args.admission_workers,
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        driver_registrants=args.driver_registrants,
        model_population=args.model_population,
        flood_connections=[int(n) for n in args.flood_connections.split(",") if n.strip()],
        idle_waves=[int(n) for n in args.idle_waves.split(",") if n.strip()],
        reclaim_tickets=args.reclaim_tickets,
        reclaim_rounds=args.reclaim_rounds,
        peer_url=args.peer_url,
        peer_pid=args.peer_pid,
        peer_redis_pid=args.peer_redis_pid,
        peer_status_path=args.peer_status_path,
        peer_cookie=args.peer_cookie,
    )
    work = Path(tempfile.mkdtemp(prefix="gelombang-bench-"))
    rows: list[Row] = []
    failed = False
    try:
        for name in chosen:
            (work / name).mkdir()
            try:
                if name == "latency":
                    saturation = next(
                        (r.median for r in rows if r.benchmark.startswith("status poll (")), None
                    )
                    rows += benchmarks.latency(options, work / name, saturation)
                elif name in ON_REQUEST:
                    rows += ON_REQUEST[name](options, work / name)
                else:
                    rows += getattr(benchmarks, name)(options, work / name)
            except Exception:
                traceback.print_exc()
                print(f"benchmark {name} could not run; logs in {work / name}", file=sys.stderr)
                failed = True
    finally:
        print(table(rows))
        if args.json:
            save_json(rows, args.json)
        if not args.keep and not failed:
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        return 2
    return 1 if any(r.met is False for r in rows) else 0
