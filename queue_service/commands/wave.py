"""Admin client for waves: list, show, put (create or change), pause, resume, close, delete.

    gelombang wave list [--tz Asia/Jakarta] [--json]
    gelombang wave show prakerja-1 [--tz Asia/Jakarta] [--json]
    gelombang wave put prakerja-1 --set admit_rate=250 --set max_active=22500
    gelombang wave put prakerja-1 --file waves.toml        # its [[waves]] entry of that id
    gelombang wave pause prakerja-1
    gelombang wave delete prakerja-1 [--force]

The admin token is read from GELOMBANG_ADMIN_TOKEN (never a flag: flags show up in `ps`); the
service at GELOMBANG_URL (default http://127.0.0.1:8080). `list` prints one line per wave;
`--json` prints what the admin API answered, for scripts. `put --file` takes a JSON object of
wave fields, or TOML: the service's config file (its `[[waves]]` entry with the wave's id) or
a file of wave fields alone. Every failure is one line on stderr (exit 1, or 2 for usage).

A wave opens once: `put` refuses to move the opening of a wave that has opened into the future
(`wave_already_opened`). To hold admission, `pause` it; for a new opening, create a new wave.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
import urllib.error
import urllib.request
from datetime import date, datetime, time
from pathlib import Path
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
    parser.add_argument(
        "--file",
        help="put: wave fields from a JSON or TOML file (a config file's [[waves]] entry "
        "with this id, or the fields alone)",
    )
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


class UsageError(Exception):
    """A mistake on the command line or in a file given to it: one line, exit 2."""


def _plain(value: Any) -> Any:
    """TOML values as the admin API takes them (times as ISO 8601 text)."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def read_wave_file(path: str, wave: str) -> dict[str, Any]:
    """Wave fields from `path`: a JSON object, or TOML (the service's config file, whose
    `[[waves]]` entry with id `wave` is taken, or a file of wave fields alone)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as json_error:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as toml_error:
            raise UsageError(
                f"{path} is neither JSON ({json_error}) nor TOML ({toml_error})"
            ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold an object of wave fields")
    if "waves" in data:
        entries = [w for w in data["waves"] if isinstance(w, dict) and w.get("id") == wave]
        if not entries:
            ids = ", ".join(str(w.get("id")) for w in data["waves"] if isinstance(w, dict))
            raise UsageError(f"{path} has no [[waves]] entry with id {wave!r} (it has: {ids})")
        data = entries[0]
    return {k: _plain(v) for k, v in data.items()}


def build_request(args: argparse.Namespace, token: str) -> urllib.request.Request:
    base = args.url.rstrip("/") + "/admin/v1/waves"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if args.action == "list":
        return urllib.request.Request(base, headers=headers)
    if not args.wave:
        raise UsageError("give the wave id")
    url = f"{base}/{args.wave}"
    if args.action == "show":
        return urllib.request.Request(url, headers=headers)
    if args.action == "delete":
        query = "?force=true" if args.force else ""
        return urllib.request.Request(url + query, headers=headers, method="DELETE")
    if args.action == "put":
        body: dict[str, Any] = {}
        if args.file:
            body.update(read_wave_file(args.file, args.wave))
        for item in args.set:
            field, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"--set needs FIELD=VALUE, got {item!r}")
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
    if autopilot.get("recover_to"):
        from queue_service.autopilot import SLOW_START_STEP

        lines.append(
            f"  climbing back to {autopilot['recover_to']:,} sessions at +{SLOW_START_STEP:.0%} "
            "a step (the target before a second cut in a row, which may have answered a stale "
            "signal)"
        )
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
    try:
        request = build_request(args, token)
    except UsageError as exc:
        print(f"gelombang wave {args.action}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a --url that is not a URL
        print(f"gelombang wave: --url {args.url!r}: {exc}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            content_type = response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        if is_queue(args.url):
            print(f"gelombang wave {args.action}: {_error(exc)}", file=sys.stderr)
        else:  # another server's refusal (an origin's "malformed token") would mislead
            print(f"gelombang wave: {not_a_queue(args.url, exc.code)}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        print(f"gelombang wave: cannot reach {args.url}: {reason}", file=sys.stderr)
        return 1
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = None
    if raw and (content_type != "application/json" or not isinstance(answer, dict)):
        print(f"gelombang wave: {not_a_queue(args.url, response.status)}", file=sys.stderr)
        return 1
    assert answer is not None
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    elif args.action == "delete":
        print(f"deleted wave {args.wave}")
    elif args.action == "list":
        print(table([wave_line(view, zone) for view in answer["waves"]]))
    else:
        print(describe(answer, zone))
    return 0


QUEUE_TITLE = "Gelombang queue service"
"""The title of the queue's OpenAPI document (/api/openapi.json): how a queue is told apart."""


def is_queue(url: str) -> bool:
    """Whether `url` is a Gelombang queue service (it serves its OpenAPI document)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/openapi.json", timeout=5) as answer:
            return bool(json.loads(answer.read())["info"]["title"] == QUEUE_TITLE)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def not_a_queue(url: str, status: int) -> str:
    return (
        f"{url} is not a Gelombang queue service (it answered HTTP {status} and serves no "
        "queue API); check --url or GELOMBANG_URL: the queue's base URL, e.g. "
        "http://127.0.0.1:8080"
    )


def _error(exc: urllib.error.HTTPError) -> str:
    """One line: the queue's own error message and code."""
    body = exc.read(65536).decode(errors="replace")
    try:
        error = json.loads(body)["error"]
        message, code = str(error["message"]), str(error["code"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code}: {body.strip()[:200]}"
    if code == "wave_in_use":
        message = message.replace("?force=true (gelombang wave delete --force)", "--force")
    return f"HTTP {exc.code}: {message} ({code})"
