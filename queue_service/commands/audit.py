"""Audit a wave from public data alone: the commitment, the pre-queue draw, first in first out
after it (skips listed with reasons), outflow within admit_rate, quota, and the hash chain.

    gelombang audit prakerja-70 --url https://antrean.example.go.id
    gelombang audit prakerja-70 --url URL --commitment 3f1a...   # the one you saved before
    gelombang audit prakerja-70 --url URL --save record.json     # keep what was checked
    gelombang audit prakerja-70 --record record.json             # check a kept record again

Before the opening it prints the draw's commitment: save it (and the signed head of the
ledger) and pass it with --commitment afterwards, so the service cannot have swapped the seed.
It reads only public routes (`GET /api/v1/waves/{wave}`, `/ledger`, `/ledger/head`,
`/.well-known/jwks.json`) and needs no token. Exit 0: every check passed; 1: a check failed;
2: the record could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from queue_service.audit import AuditReport, audit

TIMEOUT_S = 30
PAGE = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("wave", help="wave id")
    parser.add_argument("--url", help="the queue service's public base URL")
    parser.add_argument(
        "--commitment", help="the draw commitment you saved before the opening (hex)"
    )
    parser.add_argument("--save", type=Path, help="also write what was downloaded here (JSON)")
    parser.add_argument("--record", type=Path, help="audit a record written by --save instead")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _get(base: str, path: str) -> Any:
    request = urllib.request.Request(
        base.rstrip("/") + path, headers={"Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return json.loads(response.read())


def download(base: str, wave: str) -> dict[str, Any]:
    """The public record of `wave`: info, JWKS, the signed head, then every page up to it."""
    quoted = urllib.parse.quote(wave, safe="")
    info = _get(base, f"/api/v1/waves/{quoted}")
    jwks = _get(base, "/.well-known/jwks.json")
    head = _get(base, f"/api/v1/waves/{quoted}/ledger/head")
    pages, start = [], 0
    while start < int(head["count"]):
        page = _get(base, f"/api/v1/waves/{quoted}/ledger?from={start}&limit={PAGE}")
        if not page["entries"]:
            break
        pages.append(page)
        start += len(page["entries"])
    return {"wave": wave, "url": base, "info": info, "jwks": jwks, "head": head, "pages": pages}


def render(report: AuditReport, info: dict[str, Any]) -> str:
    lines = [f"Audit of wave {report.wave}"]
    draw = info.get("draw") or {}
    if draw.get("seed") is None:
        lines.append(
            f"  The pre-queue is not drawn yet. Commitment: {draw.get('commitment')}\n"
            "  Save it now; after the opening run this again with --commitment <it>."
        )
    for check in report.checks:
        lines.append(f"  {'PASS' if check.ok else 'FAIL'}  {check.name:<10} {check.detail}")
    for warning in report.warnings:
        lines.append(f"  NOTE  {warning}")
    stats = report.stats
    if stats:
        lines.append(
            f"  {stats['entries']} entries; {stats['decided']} places decided, "
            f"{stats['admitted']} admitted, skipped {stats['skipped'] or 'none'}; pre-queue "
            f"{stats['prequeue']}; head {stats['head']}"
        )
    lines.append("RESULT: " + ("every check passed" if report.ok else "FAILED"))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        if args.record:
            record = json.loads(args.record.read_text(encoding="utf-8"))
        elif args.url:
            record = download(args.url, args.wave)
        else:
            print("gelombang audit: give --url (or --record)", file=sys.stderr)
            return 2
    except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
        print(f"gelombang audit: could not read the record: {exc}", file=sys.stderr)
        return 2
    if args.save:
        args.save.write_text(json.dumps(record, indent=1), encoding="utf-8")
    report = audit(
        args.wave,
        record["info"],
        record["pages"],
        record.get("head"),
        record.get("jwks"),
        args.commitment,
    )
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(render(report, record["info"]))
    return 0 if report.ok else 1
