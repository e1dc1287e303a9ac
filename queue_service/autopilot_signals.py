"""The origin's health as the autopilot reads it: two PromQL queries against the operator's
Prometheus (the HTTP API's instant query). Prometheus because every SRE already runs one and
it works for an origin in any language.

A value is the worst (largest) sample of the query's result. Anything that is not a number,
an empty result, a query that fails or does not answer within the timeout, is missing: the
autopilot then holds its last decision (autopilot.py), it never guesses.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import aiohttp
import orjson

from queue_service.autopilot import AutopilotConfig, Signals

log = logging.getLogger(__name__)

QUERY_TIMEOUT_S = 5.0


def sample_value(body: Any) -> float | None:
    """The worst value of an instant query's answer, or None."""
    if not isinstance(body, dict) or body.get("status") != "success":
        return None
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    texts: list[Any] = []
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        texts = [result[1]]
    elif kind == "vector" and isinstance(result, list):
        texts = [s.get("value", [None, None])[1] for s in result if isinstance(s, dict)]
    values = []
    for text in texts:
        try:
            value = float(text)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            values.append(value)
    return max(values) if values else None


class PrometheusReader:
    """Reads the autopilot's signals; one HTTP session for every wave of a process."""

    def __init__(self, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def value(self, base_url: str, query: str) -> float | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(
                f"{base_url}/api/v1/query", params={"query": query}
            ) as response:
                body = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, ValueError) as exc:
            log.warning("autopilot: Prometheus at %s did not answer: %s", base_url, exc)
            return None
        return sample_value(body)

    async def signals(self, config: AutopilotConfig, wave: str) -> Signals:
        url = config.prometheus_url
        return Signals(
            latency_s=await self.value(url, config.query("latency", wave)),
            error_ratio=await self.value(url, config.query("errors", wave)),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
