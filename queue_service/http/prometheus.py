"""`GET /metrics` in Prometheus text format, for one process or for `--workers N`.

With several worker processes the supervisor sets `PROMETHEUS_MULTIPROC_DIR` before any worker
imports prometheus_client; every process then writes its samples to files in that folder and
any worker answering a scrape merges all of them (prometheus-client multiprocess mode), so
counters and histograms add up whichever worker the kernel hands the scrape to.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, multiprocess, values
from prometheus_client.aiohttp import make_aiohttp_handler

from queue_service import metrics

log = logging.getLogger(__name__)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

_handler: Handler | None = None


def prepare_multiprocess_dir(path: Path) -> None:
    """Empty `path` (or create it) for a fresh set of workers.

    Call in the supervisor before starting workers: files left by an earlier run would add
    its counts to this one's.
    """
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def mark_process_dead(pid: int, path: Path | None = None) -> None:
    """Drop a finished worker's live gauges (its counters and histograms keep counting).

    Call in the supervisor when a worker exits. `path` defaults to `PROMETHEUS_MULTIPROC_DIR`.
    """
    folder = str(path) if path is not None else os.environ.get(MULTIPROC_DIR_ENV)
    if folder:
        multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def scrape_registry() -> CollectorRegistry:
    """The registry a scrape reads: every process's files, or this process's metrics."""
    folder = multiprocess_dir()
    if folder is None:
        return metrics.REGISTRY
    if not getattr(values.ValueClass, "_multiprocess", False):
        # The variable was set after prometheus_client was imported: this process keeps its
        # samples in memory, so merging files would silently miss them.
        log.error(
            "%s is set but prometheus_client was imported before it; serving this process's "
            "metrics only",
            MULTIPROC_DIR_ENV,
        )
        return metrics.REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    return registry


async def metrics_handler(request: web.Request) -> web.Response:
    """`GET /metrics` (text format 0.0.4, or OpenMetrics when the scraper asks for it)."""
    global _handler
    if _handler is None:
        _handler = make_aiohttp_handler(scrape_registry())
    response = await _handler(request)
    assert isinstance(response, web.Response)
    return response
