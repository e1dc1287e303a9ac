"""The few admin calls a simulated run makes on its wave (aiohttp): read it, create or change
it from the scenario (`simulator.wave_definition`), delete it to start afresh, and read its
counters while the run goes on."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

ADMIN_TIMEOUT_S = 10.0
SAMPLE_TIMEOUT_S = 2.0


class WaveAdmin:
    def __init__(self, session: aiohttp.ClientSession, queue_url: str, token: str) -> None:
        self.session = session
        self.url = queue_url.rstrip("/") + "/admin/v1/waves/"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def view(self, wave: str, timeout_s: float = ADMIN_TIMEOUT_S) -> dict[str, Any] | None:
        """The admin view of the wave, None when it does not exist (or cannot be read)."""
        async with self.session.get(
            self.url + wave, headers=self.headers, timeout=aiohttp.ClientTimeout(timeout_s)
        ) as response:
            if response.status != 200:
                return None
            body = orjson.loads(await response.read())
            return body if isinstance(body, dict) else None

    async def counts(self, wave: str) -> dict[str, int] | None:
        """The wave's counters now (lua/read_counts.lua: reads only), None when unreadable."""
        try:
            view = await self.view(wave, SAMPLE_TIMEOUT_S)
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
            return None
        counts = view.get("counts") if view else None
        return {k: int(v) for k, v in counts.items()} if isinstance(counts, dict) else None

    async def put(self, wave: str, definition: dict[str, Any]) -> None:
        """Create or change the wave; RuntimeError with the queue's answer when refused."""
        async with self.session.put(
            self.url + wave,
            data=orjson.dumps(definition),
            headers={**self.headers, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(ADMIN_TIMEOUT_S),
        ) as response:
            if response.status >= 300:
                text = await response.text()
                raise RuntimeError(f"could not configure wave {wave}: {response.status} {text}")

    async def delete(self, wave: str) -> str:
        """Delete the wave and its data; says how many people it held."""
        view = await self.view(wave)
        counts = view["counts"] if view else {}
        people = sum(counts.get(k, 0) for k in ("prequeue", "waiting", "active"))
        async with self.session.delete(
            self.url + wave + "?force=true",
            headers=self.headers,
            timeout=aiohttp.ClientTimeout(ADMIN_TIMEOUT_S),
        ) as response:
            if response.status != 204:
                raise RuntimeError(f"could not delete wave {wave}: {response.status}")
        return "nobody in it" if not people else f"{people:,} people in it"
