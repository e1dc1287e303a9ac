"""Profile the queue service's hot path under load: `python -m loadtests.bench.profile status`.

Starts Redis and one `gelombang serve` (CPU 0), drives it with wrk (CPU 1) and samples the
server with py-spy (a measurement tool, not a project dependency: `pip install py-spy`).
Prints the functions with the most samples (self and inclusive) and writes the collapsed
stacks (flamegraph input) next to them.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from gelombang_harness import ChildProcess
from loadtests.bench import seed
from loadtests.bench.benchmarks import IDLE_RATE, JOIN_WAVE, STATUS_WAVE, _status_tickets
from loadtests.bench.processes import queue_server, redis_server
from loadtests.bench.wrk import run_wrk


def summarise(collapsed: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100 * n / total:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:5.1f}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench.profile")
    parser.add_argument("endpoint", choices=["status", "join"])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--rate", type=int, default=250, help="samples per second (250)")
    parser.add_argument("--lines", action="store_true", help="keep line numbers in frames")
    parser.add_argument(
        "--native",
        action="store_true",
        help="C frames too (py-spy --native; it over-weights system calls: compare, do not add)",
    )
    parser.add_argument("--out", type=Path, help="collapsed stacks (default: in the temp dir)")
    args = parser.parse_args(argv)
    out: Path = args.out or Path(tempfile.gettempdir()) / f"gelombang-profile-{args.endpoint}.txt"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="gelombang-profile-"))
    try:
        with redis_server(work, {1}) as rs:
            tickets = _status_tickets(work, rs.url, STATUS_WAVE, 100_000, 10_000)
            seed.seed_wave(rs.url, JOIN_WAVE, admit_rate=IDLE_RATE, count=0)
            config = seed.write_config(work / "bench.toml")
            with queue_server(work, rs.url, config, cpus="0") as server:
                if args.endpoint == "status":
                    path = f"/api/v1/waves/{STATUS_WAVE}/status"
                    script, script_args = "status.lua", [path, str(tickets)]
                else:
                    path = f"/api/v1/waves/{JOIN_WAVE}/join"
                    script, script_args = "join.lua", [path, uuid.uuid4().hex[:8]]
                load = threading.Thread(
                    target=run_wrk,
                    args=(server.url + path,),
                    kwargs={
                        "duration_s": args.seconds + 4,
                        "connections": args.connections,
                        "script": script,
                        "script_args": script_args,
                        "cpus": "1",
                    },
                )
                load.start()
                # taskset execs the server: its process group id is its pid
                command = [py_spy, "record", "-p", str(server.pgid), "-d", str(args.seconds)]
                command += ["-r", str(args.rate), "-f", "raw", "-o", str(out)]
                if not args.lines:
                    command.append("--nolineno")
                if args.native:
                    command.append("--native")
                py_spy_run = ChildProcess("py-spy", command, log=work / "py-spy.log")
                if py_spy_run.run(timeout_s=args.seconds + 60) != 0:
                    raise RuntimeError(f"py-spy failed:\n{py_spy_run.log_tail()}")
                load.join()
        print(summarise(out, args.top))
        print(f"\ncollapsed stacks: {out}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
