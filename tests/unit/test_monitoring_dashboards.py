"""Grafana dashboards and every PromQL expression we ship: each parses (checked by promtool),
references only metrics the queue service or the sample origin really expose (or recording
rules we define), and uses only labels those metrics have."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from queue_service import metrics as service_metrics
from simulator.origin.metrics import OriginMetrics
from tests.helpers.monitoring import (
    DASHBOARD_FILES,
    DASHBOARDS,
    GRAFANA,
    RULE_FILES,
    as_promql,
    dashboard_expressions,
    dashboards,
    rule_expressions,
)
from tests.helpers.tools import require_tool

# Series Prometheus itself creates for every target or alert.
PROMETHEUS_BUILTINS = {"up": {"job", "instance"}, "ALERTS": {"alertname", "alertstate"}}
TARGET_LABELS = {"job", "instance"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}


def exposed_series(owner: object) -> dict[str, set[str]]:
    """Sample name -> label names of every metric object held by `owner` (a module or an
    object), read from the metric definitions so no sample has to exist yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    series: dict[str, set[str]] = {}
    for metric in vars(owner).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        for suffix in suffixes[metric._type]:
            extra = {"le"} if suffix == "_bucket" else set()
            series[metric._name + suffix] = set(metric._labelnames) | extra | TARGET_LABELS
    return series


def known_series() -> dict[str, set[str]]:
    series = exposed_series(service_metrics)
    series |= exposed_series(OriginMetrics(capacity=1))
    series |= PROMETHEUS_BUILTINS
    return series


def recording_rule_names() -> set[str]:
    names: set[str] = set()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {rule["record"] for rule in group["rules"] if "record" in rule}
    return names


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for every vector selector in the expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string contents cannot confuse us
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping label lists
    found = []
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", text):
        name, matchers = match.group(1), match.group(2) or ""
        if name in KEYWORDS or (not matchers and text[match.end() :].startswith("(")):
            continue  # a keyword, or a function / aggregation call
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
        found.append((name, labels))
    return found


def test_selector_parser_finds_metrics_and_labels() -> None:
    expr = 'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{route="x{y}", job=~"$job"}[5m]))) / on (job) b:c:d and up'  # noqa: E501
    assert selectors(as_promql(expr)) == [
        ("a_bucket", {"route", "job"}),
        ("b:c:d", set()),
        ("up", set()),
    ]


@pytest.mark.slow  # starts a process
def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """Each dashboard query becomes a recording rule in a scratch file that promtool checks."""
    exprs = dashboard_expressions()
    rules = [
        {"record": f"dashboard:check_{i}:expr", "expr": as_promql(expr)}
        for i, (_, expr) in enumerate(exprs)
    ]
    scratch = tmp_path / "dashboard-exprs.yml"
    scratch.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [require_tool("promtool", package="prometheus"), "check", "rules", str(scratch)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.parametrize("source", ["dashboards", "rules"])
def test_every_expression_references_exposed_metrics_and_labels(source: str) -> None:
    exprs = dashboard_expressions() if source == "dashboards" else rule_expressions()
    series = known_series()
    records = recording_rule_names()
    problems = []
    for where, expr in exprs:
        for name, labels in selectors(as_promql(expr)):
            if name in records:
                continue
            if name not in series:
                problems.append(f"{where}: unknown metric {name}")
            elif not labels <= series[name]:
                problems.append(f"{where}: {name} has no label(s) {labels - series[name]}")
    assert not problems, "\n".join(problems)


def test_template_variables_query_exposed_metrics() -> None:
    series = known_series()
    for name, board in dashboards():
        for variable in board["templating"]["list"]:
            if variable["type"] == "datasource":
                continue  # lists datasources, queries no metric
            metric, label = re.fullmatch(
                r"label_values\((\w+),\s*(\w+)\)", variable["definition"]
            ).groups()  # type: ignore[union-attr]
            assert metric in series and label in series[metric], (name, variable["name"])


def test_dashboards_show_what_the_sre_on_duty_needs() -> None:
    text = {name: json.dumps(board) for name, board in dashboards()}
    overview, service = text["wave-overview.json"], text["service.json"]
    for needed in [
        "wave:gelombang_queue_waiting:max",  # queue length
        "wave:gelombang_admissions:rate1m",  # admissions ...
        "wave:gelombang_wave_admit_rate:max",  # ... vs target
        "wave:gelombang_sessions_active:max",  # active ...
        "wave:gelombang_wave_max_active:max",  # ... vs max_active
        "wave:gelombang_wait_seconds:p99_rate5m",  # wait percentiles
        "wave:gelombang_eta_error_seconds:mean_rate5m",  # ETA error
        "job:gelombang_origin_saturation:ratio_avg1m",  # origin health
        "job:gelombang_origin_requests_5xx:ratio_rate5m",
    ]:
        assert needed in overview, needed
    for needed in [
        "gelombang_http_request_duration_seconds_count",  # rate and errors by route
        "gelombang_http_request_duration_seconds_bucket",  # duration by route
        "gelombang_redis_call_duration_seconds_bucket",
        "gelombang_redis_errors_total",
        "gelombang_event_loop_lag_seconds_bucket",
        "gelombang_batch_size_sum",
    ]:
        assert needed in service, needed


def test_dashboards_are_well_formed_for_grafana_provisioning() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    # the provisioned Prometheus is the default, which the datasource variable starts on
    assert datasources["datasources"][0]["isDefault"] is True
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/gelombang.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert {path.name for path in DASHBOARD_FILES} == {"wave-overview.json", "service.json"}
    uids = set()
    for name, board in dashboards():
        uids.add(board["uid"])
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        occupied: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])
            cells = {
                (pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])
            }
            assert not cells & occupied, f"{name}: {panel['title']} overlaps another panel"
            occupied |= cells
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
    assert len(uids) == len(DASHBOARD_FILES)


def test_dashboard_files_are_built_from_the_generator() -> None:
    module = runpy.run_path(str(DASHBOARDS / "build_dashboards.py"))
    assert module["main"](["--check"]) == 0, "run .venv/bin/python dashboards/build_dashboards.py"


def test_dashboards_name_no_datasource_uid_so_an_import_shows_data() -> None:
    """Imported into a Grafana whose Prometheus has another uid, a dashboard that hard-codes
    one shows no data. Every reference goes through the `datasource` variable, which lists
    the Grafana's Prometheus datasources and starts on its default."""
    for name, board in dashboards():
        variables = board["templating"]["list"]
        assert variables[0]["name"] == "datasource" and variables[0]["type"] == "datasource"
        assert variables[0]["query"] == "prometheus" and variables[0]["current"] == {}
        uids = re.findall(r'"uid": "([^"]*)"', json.dumps(board))
        refs = {uid for uid in uids if uid != board["uid"]}
        assert refs == {"${datasource}"}, (name, refs)
