"""What a join's proof of work costs: `python -m loadtests.bench.pow [--bits 14,16,18]`.

- a person: the real waiting page in headless Chromium (Debian's, driven by Playwright) with
  the CPU throttled 4x, Lighthouse's stand-in for a mid-range phone, solving the wave's
  challenge in its Web Worker (SubtleCrypto SHA-256), from the page's open to its place;
- a bot: native SHA-256 in one Python process (hashlib, OpenSSL) on one core, the cheapest
  solver a script can run without writing C: seconds of one core per place.
The cost is random (geometric): medians over several solves are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from gelombang_harness import ChildProcess, HttpReady
from loadtests.chromium import CHROMIUM_FLAGS, chromium_path
from queue_service.proof_of_work import leading_zero_bits
from queue_service.redis_server import free_port

ADMIN_TOKEN = "pow-bench-admin-token"
PHONE_THROTTLE = 4.0
IN_LINE = "['waiting','paused','closing'].includes(document.getElementById('state').dataset.state)"
ORIGIN = "http://127.0.0.1:9/"


def bot_hashes_per_s(seconds: float = 2.0) -> float:
    """SHA-256 of a join's preimage per second on one core."""
    prefix, n, started = b"0000000000.abcdefghijkl.mmmmmmmmmmmmmmmm:3171011508900001:", 0, 0.0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10_000):
            leading_zero_bits(hashlib.sha256(prefix + str(n).encode()).digest())
            n += 1
    return n / (time.perf_counter() - started)


async def phone_solve_seconds(base: str, bits: int, solves: int) -> list[float]:
    """Seconds from opening the page to holding a place, per solve, CPU throttled 4x."""
    from playwright.async_api import async_playwright

    executable = chromium_path()
    if executable is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    times: list[float] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            for i in range(solves):
                context = await browser.new_context(viewport={"width": 360, "height": 740})
                page = await context.new_page()
                cdp = await context.new_cdp_session(page)
                await cdp.send("Emulation.setCPUThrottlingRate", {"rate": PHONE_THROTTLE})
                started = time.perf_counter()
                await page.goto(f"{base}/w/pow?registrant=phone-{bits}-{i}")
                # polled with evaluate: the page's CSP forbids wait_for_function's eval
                while not await page.evaluate(IN_LINE):  # noqa: ASYNC110 (the page, not us)
                    await asyncio.sleep(0.05)
                times.append(time.perf_counter() - started)
                await context.close()
        finally:
            await browser.close()
    return times


async def configure(base: str, bits: int) -> None:
    now = time.time()
    body = {"opens_at": now - 5, "closes_at": now + 3600, "admit_rate": 0.001,
            "origin_url": ORIGIN, "pow_bits": bits}  # fmt: skip
    async with (
        aiohttp.ClientSession() as http,
        http.put(
            f"{base}/admin/v1/waves/pow",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response,
    ):
        assert response.status in (200, 201), await response.text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench.pow", description=__doc__)
    parser.add_argument("--bits", default="14,16,18", help="difficulties (14,16,18)")
    parser.add_argument("--solves", type=int, default=5, help="page solves per difficulty (5)")
    args = parser.parse_args(argv)
    difficulties = [int(b) for b in args.bits.split(",")]
    rate = bot_hashes_per_s()
    work = Path(tempfile.mkdtemp(prefix="gelombang-pow-"))
    port = free_port()
    serve = ChildProcess(
        "serve",
        [sys.executable, "-m", "gelombang.cli", "serve", "--port", str(port),
         "--state-dir", str(work), "--log-level", "WARNING"],
        log=work / "serve.log",
        ready=HttpReady(f"http://127.0.0.1:{port}/readyz"),
        env={"GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN, "GELOMBANG_RATE_LIMITS": "off",
             "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    print(f"bot: {rate:,.0f} SHA-256/s on one core (hashlib)")
    print(
        "| bits | expected hashes | bot: core-seconds per place | phone (4x throttled): median s |"
    )
    print("|---|---|---|---|")
    with serve:
        for bits in difficulties:
            asyncio.run(configure(base, bits))
            phone = asyncio.run(phone_solve_seconds(base, bits, args.solves))
            expected = 2.0**bits
            print(
                f"| {bits} | {expected:,.0f} | {expected / rate:.3f} | "
                f"{statistics.median(phone):.1f} (of {', '.join(f'{t:.1f}' for t in phone)}) |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
