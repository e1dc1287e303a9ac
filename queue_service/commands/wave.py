"""Admin client for waves: list, show, put (create/update), pause, resume, close.

The admin token is read from GELOMBANG_ADMIN_TOKEN (never a flag: flags show up in `ps`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("GELOMBANG_URL", "http://127.0.0.1:8080"),
        help="queue service base URL (env GELOMBANG_URL)",
    )
    parser.add_argument("action", choices=["list", "show", "put", "pause", "resume", "close"])
    parser.add_argument("wave", nargs="?", help="wave id (all actions but list)")
    parser.add_argument("--file", help="put: JSON file with wave fields")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="put: a field (VALUE parsed as JSON when it can be), e.g. --set admit_rate=250",
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
        raise SystemExit(f"wave {args.action} needs a wave id")
    url = f"{base}/{args.wave}"
    if args.action == "show":
        return urllib.request.Request(url, headers=headers)
    if args.action == "put":
        body: dict[str, Any] = {}
        if args.file:
            with open(args.file, encoding="utf-8") as fh:
                body.update(json.load(fh))
        for item in args.set:
            field, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"--set needs FIELD=VALUE, got {item!r}")
            body[field] = _parse_value(value)
        return urllib.request.Request(
            url, data=json.dumps(body).encode(), headers=headers, method="PUT"
        )
    return urllib.request.Request(f"{url}/{args.action}", data=b"", headers=headers, method="POST")


def run(args: argparse.Namespace) -> int:
    token = os.environ.get("GELOMBANG_ADMIN_TOKEN")
    if not token:
        print("set GELOMBANG_ADMIN_TOKEN to the service's admin token", file=sys.stderr)
        return 2
    request = build_request(args, token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(json.dumps(json.loads(response.read() or b"{}"), indent=2, ensure_ascii=False))
            return 0
    except urllib.error.HTTPError as exc:
        print(f"HTTP {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cannot reach {args.url}: {exc.reason}", file=sys.stderr)
        return 1
