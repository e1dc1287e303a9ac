"""Admin client for waves: list, show, put (create or change), pause, resume, close, delete.

    gelombang wave list [--tz Asia/Jakarta] [--json]
    gelombang wave show prakerja-1 [--tz Asia/Jakarta] [--json]
    gelombang wave put prakerja-1 --set admit_rate=250 --set max_active=22500
    gelombang wave pause prakerja-1
    gelombang wave delete prakerja-1 [--force]

The admin token is read from GELOMBANG_ADMIN_TOKEN (never a flag: flags show up in `ps`); the
service at GELOMBANG_URL (default http://127.0.0.1:8080). `list` prints one line per wave;
`--json` prints what the admin API answered, for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ACTIONS = ("list", "show", "put", "pause", "resume", "close", "delete")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    parser.add_argument("wave", nargs="?", help="wave id (every action but list)")
    parser.add_argument(
        "--url",
        default=os.environ.get("GELOMBANG_URL", "http://127.0.0.1:8080"),
        help="queue service base URL (env GELOMBANG_URL; default http://127.0.0.1:8080)",
    )
    parser.add_argument("--file", help="put: a JSON file with wave fields")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="put: a field (VALUE parsed as JSON when it can be), e.g. --set admit_rate=250",
    )
    parser.add_argument(
        "--tz",
        default=os.environ.get("GELOMBANG_TZ", "UTC"),
        help="time zone for the times shown, e.g. Asia/Jakarta (env GELOMBANG_TZ; default UTC)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
    parser.add_argument(
        "--force", action="store_true", help="delete: even while people wait in the wave"
    )


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_request(args: argparse.Namespace, token: str) -> urllib.request.Request:
    base = args.url.rstrip("/") + "/admin/v1/waves"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if args.action == "list":
        return urllib.request.Request(base, headers=headers)
    if not args.wave:
        raise SystemExit(f"gelombang wave {args.action}: give the wave id")
    url = f"{base}/{args.wave}"
    if args.action == "show":
        return urllib.request.Request(url, headers=headers)
    if args.action == "delete":
        query = "?force=true" if args.force else ""
        return urllib.request.Request(url + query, headers=headers, method="DELETE")
    if args.action == "put":
        body: dict[str, Any] = {}
        if args.file:
            with open(args.file, encoding="utf-8") as fh:
                body.update(json.load(fh))
        for item in args.set:
            field, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"gelombang wave put: --set needs FIELD=VALUE, got {item!r}")
            body[field] = _parse_value(value)
        return urllib.request.Request(
            url, data=json.dumps(body).encode(), headers=headers, method="PUT"
        )
    return urllib.request.Request(f"{url}/{args.action}", data=b"", headers=headers, method="POST")


def local_time(iso: str, zone: ZoneInfo) -> str:
    return datetime.fromisoformat(iso).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _clock(iso: str, zone: ZoneInfo) -> str:
    return datetime.fromisoformat(iso).astimezone(zone).strftime("%H:%M:%S %Z")


def _of(value: int, limit: int) -> str:
    return f"{value:,}/{limit:,}" if limit else f"{value:,}/-"


def wave_line(view: dict[str, Any], zone: ZoneInfo) -> list[str]:
    wave, counts = view["wave"], view["counts"]
    return [
        wave["id"],
        view["state"],
        f"{counts['waiting'] + counts['prequeue']:,}",
        _of(counts["active"], wave["max_active"]),
        f"{wave['admit_rate']:g}",
        _of(counts["admitted"], wave["quota"]),
        local_time(wave["opens_at"], zone),
        local_time(wave["closes_at"], zone),
    ]


HEADER = ["WAVE", "STATE", "WAITING", "ACTIVE/MAX", "RATE/S", "ADMITTED/QUOTA", "OPENS", "CLOSES"]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in [HEADER, *rows]]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def describe(view: dict[str, Any], zone: ZoneInfo) -> str:
    """One wave: its line, then its settings and counts, times in `zone`."""
    wave = dict(view["wave"])
    for name in ("opens_at", "closes_at"):
        wave[name] = local_time(wave[name], zone)
    settings = "\n".join(f"  {k}: {json.dumps(v, ensure_ascii=False)}" for k, v in wave.items())
    counts = "  " + "  ".join(f"{k} {v:,}" for k, v in view["counts"].items())
    text = f"{table([wave_line(view, zone)])}\n\nsettings:\n{settings}\n\ncounts:\n{counts}"
    if view.get("autopilot"):
        text += "\n\nautopilot:\n" + describe_autopilot(view["autopilot"], zone)
    return text


def describe_autopilot(autopilot: dict[str, Any], zone: ZoneInfo) -> str:
    """What the autopilot is doing and why, in a few lines."""
    signals, last = autopilot["signals"], autopilot["last_decision"]
    bounds = autopilot["bounds"]

    def figure(value: float | None, fmt: str) -> str:
        return "missing" if value is None else format(value, fmt)

    lines = [
        f"  mode {autopilot['mode']}: target {autopilot['target_active'] or '-'} sessions "
        f"(bounds {bounds['min_active']:,}-{bounds['max_active']:,}), admit_rate "
        f"{figure(autopilot['admit_rate'], '.3g')}/s",
        f"  origin: p95 {figure(signals['latency_s'], '.2f')} s (target "
        f"{signals['latency_target_s']:g} s), errors {figure(signals['error_ratio'], '.1%')} "
        f"(target {signals['error_target']:.1%}), {signals['active']:,} sessions active, "
        f"{signals['waiting']:,} waiting" + ("  [SIGNAL MISSING]" if signals["stale"] else ""),
        f"  last decision: {last['action'] or '-'} at "
        f"{_clock(last['at'], zone) if last['at'] else '-'}: {last['reason'] or ''}",
    ]
    if autopilot.get("hold_until"):
        lines.append(f"  held by an operator until {local_time(autopilot['hold_until'], zone)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    token = os.environ.get("GELOMBANG_ADMIN_TOKEN")
    if not token:
        print("gelombang wave: set GELOMBANG_ADMIN_TOKEN to an admin token", file=sys.stderr)
        return 2
    try:
        zone = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"gelombang wave: unknown time zone {args.tz!r}", file=sys.stderr)
        return 2
    request = build_request(args, token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        print(f"gelombang wave {args.action}: HTTP {exc.code}: {_error(exc)}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"gelombang wave: cannot reach {args.url}: {exc.reason}", file=sys.stderr)
        return 1
    answer = json.loads(raw) if raw else {}
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    elif args.action == "delete":
        print(f"deleted wave {args.wave}")
    elif args.action == "list":
        print(table([wave_line(view, zone) for view in answer["waves"]]))
    else:
        print(describe(answer, zone))
    return 0


def _error(exc: urllib.error.HTTPError) -> str:
    body = exc.read().decode(errors="replace")
    try:
        error = json.loads(body)["error"]
        return f"{error['message']} ({error['code']})"
    except (ValueError, KeyError, TypeError):
        return body.strip()
