"""Checks before a live run through the queue (`gelombang simulate`): will it measure anything?

- the wave exists at the queue;
- the origin protects that wave (the sample origin says which one in its /metrics:
  `gelombang_origin_protection{wave=...}`): an origin guarding another wave refuses every
  token as wrong-wave, an unprotected one lets anyone in;
- the queue believes the registrants' own addresses (each sends one of 100.64.0.0/10 in
  X-Forwarded-For, see `driver.synthetic_address`): otherwise per-address limits count the
  whole crowd as one client (127.0.0.1) and refuse it. Probed with joins of throw-away
  registrants from one synthetic address until the queue answers 429 join_per_ip (or the
  burst is clearly not limited), then one from another address: refused too = the queue sees
  one address. While the wave is still scheduled these joins make no ticket; otherwise
  the probe's tickets are left at once (skipped at no cost).

Problems that make the run meaningless are errors (the command stops); the others warnings.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from simulator.client import QueueApi
from simulator.driver import SYNTHETIC_NETWORK
from simulator.transport import send

PROBE_JOINS = 200
PROBE_BATCH = 20
"""Joins sent from one address at most: above the default join_per_ip burst (60)."""
TIMEOUT_S = 5.0
TIMEOUT = aiohttp.ClientTimeout(TIMEOUT_S)


@dataclass
class Preflight:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    addresses_believed: bool | None = None
    """True: the queue limits per synthetic address; False: it sees one address for all;
    None: could not tell (no per-address limit was reached)."""


def probe_address(n: int) -> str:
    """Synthetic addresses for the probe, away from the registrants' own (from the top)."""
    return str(SYNTHETIC_NETWORK.broadcast_address - 1 - n)


async def check(
    session: aiohttp.ClientSession, queue_url: str, origin_url: str, wave: str
) -> Preflight:
    result = Preflight()
    status, _ = await _get_json(session, f"{queue_url}/api/v1/waves/{wave}")
    if status == 404:
        result.errors.append(f"the queue at {queue_url} has no wave {wave!r}")
        return result
    if status != 200:
        result.errors.append(f"the queue at {queue_url} did not answer for wave {wave!r}")
        return result
    protected = await _origin_protection(session, origin_url)
    if protected is None:
        result.warnings.append(
            f"cannot tell which wave the origin at {origin_url} protects (no "
            "gelombang_origin_protection in its /metrics)"
        )
    elif protected == "":
        result.warnings.append(
            f"the origin at {origin_url} is unprotected: it admits anyone, tokens or not"
        )
    elif protected not in (wave, "*"):
        result.errors.append(
            f"the origin at {origin_url} protects wave {protected!r}, not {wave!r}: it would "
            f"refuse every admission token as wrong-wave (start it with --wave {wave})"
        )
    result.addresses_believed = await _addresses_believed(session, queue_url, wave)
    if result.addresses_believed is False:
        result.warnings.append(
            "the queue does not believe the registrants' own addresses (X-Forwarded-For): "
            "per-address limits count the whole crowd as one client and will refuse most of "
            "it. Start the queue with GELOMBANG_TRUSTED_PROXIES=127.0.0.1/32 (the simulator "
            "acts as the proxy), or raise the wave's join_per_ip and status_per_ip limits."
        )
    return result


async def _get_json(session: aiohttp.ClientSession, url: str) -> tuple[int | None, Any]:
    try:
        async with session.get(url, timeout=TIMEOUT) as response:
            raw = await response.read()
            return response.status, orjson.loads(raw) if raw else None
    except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
        return None, None


async def _origin_protection(session: aiohttp.ClientSession, origin_url: str) -> str | None:
    try:
        async with session.get(f"{origin_url}/metrics", timeout=TIMEOUT) as response:
            text = await response.text() if response.status == 200 else ""
    except (TimeoutError, aiohttp.ClientError):
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "gelombang_origin_protection":
            for sample in family.samples:
                if sample.value:
                    return sample.labels.get("wave", "")
            return ""
    return None


async def _addresses_believed(
    session: aiohttp.ClientSession, queue_url: str, wave: str
) -> bool | None:
    probe = secrets.token_hex(4)
    api = QueueApi(wave)
    tickets: list[str] = []

    async def join(n: int, address: str) -> tuple[int | None, str]:
        request = api.join({"registrant": f"gelombang-preflight-{probe}-{n}"})
        answer = await send(
            session, queue_url, request, timeout_s=TIMEOUT_S,
            headers={"X-Forwarded-For": address},
        )  # fmt: skip
        view = answer.view
        if view is not None and view.ticket:
            tickets.append(view.ticket)
        return answer.status, answer.rate_limit_policy

    try:
        limited = False
        # in concurrent batches: one join at a time on a slow (or loaded) machine may come no
        # faster than the limit refills, and the probe would never reach it
        for first in range(0, PROBE_JOINS, PROBE_BATCH):
            batch = range(first, min(first + PROBE_BATCH, PROBE_JOINS))
            answers = await asyncio.gather(*(join(n, probe_address(0)) for n in batch))
            if any(status == 429 and "join_per_ip" in policy for status, policy in answers):
                limited = True
                break
        if not limited:
            return None  # no per-address limit reached: nothing will refuse the crowd either
        status, policy = await join(PROBE_JOINS, probe_address(1))
        return not (status == 429 and "join_per_ip" in policy)
    finally:
        for ticket in tickets:
            await send(session, queue_url, api.leave(ticket), timeout_s=TIMEOUT_S)
