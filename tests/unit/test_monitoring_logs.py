"""Structured logs (JSON lines with request ids, admin actions with who and what), the
event-loop lag monitor, and the single-process /metrics endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from queue_service import metrics
from queue_service.http.prometheus import metrics_handler, prepare_multiprocess_dir, scrape_registry
from queue_service.logs import configure_logging, new_request_id, request_id_var
from queue_service.loop_lag import monitor_event_loop_lag
from queue_service.overload import OverloadGuard
from queue_service.ratelimit import RateLimitRules
from queue_service.store import SCRIPTS
from tests.helpers.support import ADMIN, wave_body

# Labels a metric may carry: bounded sets only, never a ticket or a registrant.
BOUNDED_LABELS = {"wave", "state", "result", "rule", "route", "method", "status_class", "op"}
BOUNDED_LABELS |= {"action"}
# call-backs: a contact kind, a message kind and a delivery outcome, each from a fixed list
BOUNDED_LABELS |= {"channel", "kind", "outcome"}


@pytest.fixture
def json_logs() -> Iterator[Any]:
    """Configure JSON logging, redirect its handler into a buffer, give back parsed lines."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging("json", "INFO")
    buffer = io.StringIO()
    for handler in root.handlers:
        if handler.get_name() == "gelombang" and isinstance(handler, logging.StreamHandler):
            handler.setStream(buffer)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line]

    yield lines
    for handler in root.handlers[:]:
        if handler not in saved_handlers:
            root.removeHandler(handler)
    root.setLevel(saved_level)


def test_json_log_line_carries_request_id_and_extra_fields(json_logs: Any) -> None:
    log = logging.getLogger("queue_service.test")
    token = request_id_var.set("abc123")
    try:
        log.info("joined %s", "w1", extra={"wave": "w1", "changes": {"admit_rate": 5}})
    finally:
        request_id_var.reset(token)
    log.warning("no request here")
    first, second = json_logs()
    assert first["msg"] == "joined w1"
    assert first["level"] == "INFO" and first["logger"] == "queue_service.test"
    assert first["request_id"] == "abc123"
    assert first["wave"] == "w1" and first["changes"] == {"admit_rate": 5}
    assert first["ts"].endswith("+00:00")
    assert "request_id" not in second


def test_configure_logging_twice_keeps_one_handler(json_logs: Any) -> None:
    configure_logging("text", "INFO")
    configure_logging("json", "DEBUG")
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "gelombang"]
    assert len(ours) == 1
    assert logging.getLogger().level == logging.DEBUG


def test_exceptions_are_one_json_field_and_text_lines_keep_fields_on_the_first_line(
    json_logs: Any,
) -> None:
    log = logging.getLogger("queue_service.test")
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        log.exception("failed", extra={"wave": "w1"})
    (line,) = json_logs()
    assert line["msg"] == "failed" and "ZeroDivisionError: boom" in line["exc"]

    configure_logging("text", "INFO")
    buffer = io.StringIO()
    for handler in logging.getLogger().handlers:
        if handler.get_name() == "gelombang" and isinstance(handler, logging.StreamHandler):
            handler.setStream(buffer)
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        log.exception("failed", extra={"wave": "w1"})
    first, *rest = buffer.getvalue().splitlines()
    assert first.endswith("queue_service.test: failed wave='w1'")
    assert rest[-1] == "ZeroDivisionError: boom"


def test_configure_logging_refuses_unknown_format() -> None:
    with pytest.raises(ValueError, match="json"):
        configure_logging("xml")


def test_request_ids_are_unique() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000


async def test_admin_change_is_logged_with_actor_wave_changes_and_request_id(
    client: TestClient, json_logs: Any
) -> None:
    def updates() -> float:
        value = metrics.REGISTRY.get_sample_value(
            "gelombang_admin_actions_total", {"action": "update"}
        )
        return value or 0.0

    response = await client.put("/admin/v1/waves/logw", json=wave_body(), headers=ADMIN)
    assert response.status in (200, 201)
    before = updates()
    response = await client.put("/admin/v1/waves/logw", json=wave_body(admit_rate=7), headers=ADMIN)
    assert response.status == 200
    request_id = response.headers["X-Request-Id"]
    audits = [line for line in json_logs() if line.get("admin_action")]
    last = audits[-1]
    assert last["wave"] == "logw"
    assert last["actor"].startswith("admin@")
    assert last["changes"]["admit_rate"]["to"] == 7
    assert last["admin_action"] == "update"
    assert last["request_id"] == request_id
    assert updates() == before + 1


async def test_event_loop_lag_monitor_sees_a_blocked_loop() -> None:
    def observed() -> tuple[float, float]:
        count = metrics.REGISTRY.get_sample_value("gelombang_event_loop_lag_seconds_count")
        total = metrics.REGISTRY.get_sample_value("gelombang_event_loop_lag_seconds_sum")
        return count or 0.0, total or 0.0

    before_count, before_sum = observed()
    guard = OverloadGuard(max_inflight=10, max_lag_s=0.25)
    task = asyncio.create_task(monitor_event_loop_lag(guard, interval_s=0.02))
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # block the loop, as a CPU-bound handler would  # noqa: ASYNC251
    await asyncio.sleep(0.005)  # the monitor's overdue timer runs first
    assert guard.lag_s >= 0.25 and not guard.admits(0)  # new requests would be shed now
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after_count, after_sum = observed()
    assert after_count - before_count >= 2
    assert after_sum - before_sum >= 0.25
    assert guard.lag_s < 0.25 and guard.admits(0)  # and recovered


async def test_single_process_metrics_endpoint_serves_prometheus_text(
    aiohttp_client: Any,
) -> None:
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    client = await aiohttp_client(app)
    metrics.admin_actions.labels("metrics-test").inc()
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert "_created" not in text  # as in multiprocess mode: one series set either way
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "gelombang_event_loop_lag_seconds" in families
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in families["gelombang_admin_actions"].samples
    }
    assert samples[("gelombang_admin_actions_total", (("action", "metrics-test"),))] >= 1


def test_metric_definitions_follow_prometheus_conventions() -> None:
    defined = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert len(defined) >= 20
    for metric in defined:
        name = metric._name
        assert name.startswith("gelombang_"), name
        assert not name.endswith("_total"), name  # the client adds it to counters
        assert set(metric._labelnames) <= BOUNDED_LABELS, (name, metric._labelnames)
        if metric._type == "histogram" and "batch_size" not in name:
            assert name.endswith("_seconds"), name


def test_rare_event_counters_are_pre_initialised_for_every_label_value() -> None:
    # rate() of a counter born at its first error misses that error: the error-ratio alert
    # needs a zero series for every operation the store times.
    assert set(SCRIPTS) | {"ping", "wave_admin"} <= set(metrics.REDIS_OPS)
    rules = {f.name for f in dataclasses.fields(RateLimitRules) if f.name != "enabled"}
    assert rules == set(metrics.RATE_LIMIT_RULES)


def test_multiprocess_dir_set_too_late_is_reported_not_silently_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # This test process imported prometheus_client without the variable: its samples live in
    # memory, so reading the (empty) folder would show zeros. Serve memory and say why.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with caplog.at_level(logging.ERROR):
        assert scrape_registry() is metrics.REGISTRY
    assert "imported before" in caplog.text


def test_prepare_multiprocess_dir_starts_from_empty(tmp_path: Path) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"old run")
    prepare_multiprocess_dir(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []
    prepare_multiprocess_dir(tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir()
