"""With `gelombang serve --workers 2`, /metrics shows totals over every worker whichever
worker answers the scrape, and counts survive a worker that dies and is replaced."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.processes import ServeProcess

WAVE = "mp1"
JOINS = 60
JOIN_ROUTE = "/api/v1/waves/{wave}/join"

pytestmark = pytest.mark.slow


def write_config(path: Path) -> Path:
    now = int(time.time())
    path.write_text(
        f"""
[[waves]]
id = "{WAVE}"
opens_at = {now - 5}
closes_at = {now + 3600}
admit_rate = 0.001      # (almost) nobody is admitted: the line stays put
max_active = 0
session_ttl_s = 600
quota = 10000
abandon_after_s = 3600
origin_url = "http://127.0.0.1:9/daftar"
"""
    )
    return path


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # A new connection per scrape: SO_REUSEPORT hands each to either worker.
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def joins_new(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return samples[("gelombang_joins_total", (("result", "new"), ("wave", WAVE)))]


def join_requests(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "gelombang_http_request_duration_seconds_count"
        and ("route", JOIN_ROUTE) in labels
    )


def joins_per_worker(metrics_dir: Path) -> dict[int, float]:
    """Each worker's own join count, read from its own sample file."""
    counts: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "gelombang_joins_total" and sample.labels.get("result") == "new":
                    counts[pid] = counts.get(pid, 0.0) + sample.value
    return counts


def test_totals_add_up_across_two_workers_and_survive_a_worker_restart(
    redis_url: str, state_dir: Path
) -> None:
    config = write_config(state_dir / "waves.toml")
    with ServeProcess(redis_url, state_dir, workers=2, config=config) as serve:
        for i in range(JOINS):
            request = urllib.request.Request(
                f"{serve.url}/api/v1/waves/{WAVE}/join",
                data=json.dumps({"registrant": f"mp-{i}"}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 201

        (metrics_dir,) = state_dir.glob("metrics-*")
        per_worker = joins_per_worker(metrics_dir)
        assert len([n for n in per_worker.values() if n > 0]) == 2, per_worker  # both served
        assert sum(per_worker.values()) == JOINS

        for _ in range(6):
            samples = scrape(serve.url)
            assert joins_new(samples) == JOINS
            assert join_requests(samples) == JOINS
            # Wave gauges: one series (the latest sample of any worker), no per-pid duplicates.
            waiting = [k for k in samples if k[0] == "gelombang_queue_waiting"]
            assert waiting == [("gelombang_queue_waiting", (("wave", WAVE),))]
            assert 0 < samples[waiting[0]] <= JOINS

        # A worker dies; the supervisor starts another. Its counts must not vanish.
        victim = max(per_worker, key=lambda pid: per_worker[pid])
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = {int(p.stem.split("_")[-1]) for p in metrics_dir.glob("*.db")}
            live_gauges = list(metrics_dir.glob(f"gauge_live*_{victim}.db"))
            if len(pids - {victim}) >= 2 and not live_gauges:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no replacement worker, or {victim}'s live gauges remain")
        for _ in range(4):
            assert joins_new(scrape(serve.url)) == JOINS
