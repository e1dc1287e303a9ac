# ruff: noqa: E501  (panel tables: one PromQL query per line reads better than wrapped)
"""Build the Grafana dashboards (JSON) from the short panel lists below.

    .venv/bin/python dashboards/build_dashboards.py          # write dashboards/grafana/dashboards/
    .venv/bin/python dashboards/build_dashboards.py --check  # exit 1 if a file is out of date

Written as code so every panel has the same datasource, layout and legend conventions, and so
tests/unit/test_monitoring_dashboards.py can check each query against the metrics the service
exposes. Wave-level panels read the recording rules (dashboards/rules/recording.yml).

Every panel, variable and annotation reads the dashboard's `datasource` variable (a Prometheus
datasource picked from a list, the default one to start with), never a fixed datasource uid:
imported into an existing Grafana, whose Prometheus has a uid of its own, the dashboards show
data at once; provisioned by docker compose they use the provisioned Prometheus (the default).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "grafana" / "dashboards"
DATASOURCE_VARIABLE = {
    "name": "datasource",
    "label": "Prometheus",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "hide": 0,
    "refresh": 1,
    "regex": "",
    "includeAll": False,
    "multi": False,
}
"""Which Prometheus the dashboard reads: any of the Grafana's, its default one to start with."""
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WAVE = 'wave=~"$wave"'
JOB = 'job=~"$job"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def q(expr: str, legend: str) -> Query:
    return Query(" ".join(expr.split()), legend)


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": color, "value": value} for value, color in panel.thresholds]
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "range": True,
            }
            for i, query in enumerate(panel.queries)
        ],
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "color": {"mode": "thresholds" if panel.kind == "stat" else "palette-classic"},
            },
            "overrides": [],
        },
        "options": (
            {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "area",
                "textMode": "value_and_name",
            }
            if panel.kind == "stat"
            else {
                "legend": {
                    "displayMode": "table",
                    "placement": "bottom",
                    "calcs": ["lastNotNull", "max"],
                },
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        ),
    }
    body.update(panel.extra)
    return body


def dashboard_json(
    uid: str, title: str, description: str, variables: list[dict[str, Any]], rows: list[Row]
) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for row in rows:
        panels.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        next_id, y, x, row_height = next_id + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(panel_json(panel, next_id, x, y))
            next_id, x, row_height = next_id + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["gelombang"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "5s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "annotations": {
            "list": [
                {
                    "name": "Alerts",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "iconColor": "red",
                    "expr": 'ALERTS{alertstate="firing", alertname=~"Gelombang.*"}',
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{wave}} {{job}} {{instance}}",
                    "useValueForTime": False,
                    "step": "30s",
                }
            ]
        },
        "templating": {"list": [DATASOURCE_VARIABLE, *variables]},
        "links": [],
        "panels": panels,
    }


def wave_overview() -> dict[str, Any]:
    rows = [
        Row("Now", (
            Panel("Wave state", "Current state of each wave.",
                  (q(f"wave_state:gelombang_wave_state:max{{{WAVE}}} == 1", "{{wave}}: {{state}}"),),
                  kind="stat", width=6, height=4,
                  extra={"options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "/^state$/", "values": False},
                                     "textMode": "name", "colorMode": "none"}}),
            Panel("Waiting", "People in line after opening, not yet admitted.",
                  (q(f"wave:gelombang_queue_waiting:max{{{WAVE}}}", "{{wave}}"),),
                  kind="stat", width=4, height=4),
            Panel("Pre-queue", "Early arrivals to be shuffled at opening.",
                  (q(f"wave:gelombang_queue_prequeue:max{{{WAVE}}}", "{{wave}}"),),
                  kind="stat", width=4, height=4),
            Panel("Achieved / configured admission rate (5m)",
                  "1 = admitting exactly at admit_rate. Below 0.5 with a long line pages "
                  "(GelombangAdmissionRateLow).",
                  (q(f"wave:gelombang_admission_rate:ratio_rate5m{{{WAVE}}}", "{{wave}}"),),
                  unit="percentunit", kind="stat", width=5, height=4,
                  thresholds=((0.0, "red"), (0.5, "orange"), (0.9, "green"), (1.2, "red"))),
            Panel("Admitted / quota", "Share of the wave's quota used.",
                  (q(f"wave:gelombang_wave_admitted:max{{{WAVE}}} / wave:gelombang_wave_quota:max{{{WAVE}}}",
                     "{{wave}}"),),
                  unit="percentunit", kind="stat", width=5, height=4,
                  thresholds=((0.9, "orange"), (1.0, "red"))),
        )),
        Row("Queue and admissions", (
            Panel("Queue length", "Waiting after opening and in the pre-queue.",
                  (q(f"wave:gelombang_queue_waiting:max{{{WAVE}}}", "{{wave}} waiting"),
                   q(f"wave:gelombang_queue_prequeue:max{{{WAVE}}}", "{{wave}} pre-queue"))),
            Panel("Admissions per second vs target",
                  "Achieved admissions/s (1m) against the configured admit_rate.",
                  (q(f"wave:gelombang_admissions:rate1m{{{WAVE}}}", "{{wave}} achieved"),
                   q(f"wave:gelombang_wave_admit_rate:max{{{WAVE}}}", "{{wave}} admit_rate")),
                  unit="reqps"),
            Panel("Active sessions vs max_active",
                  "Admitted sessions alive now; admission waits when it reaches max_active "
                  "(0 = no limit).",
                  (q(f"wave:gelombang_sessions_active:max{{{WAVE}}}", "{{wave}} active"),
                   q(f"wave:gelombang_wave_max_active:max{{{WAVE}}} > 0", "{{wave}} max_active"))),
            Panel("Admitted vs quota", "Admissions so far in the wave against its quota.",
                  (q(f"wave:gelombang_wave_admitted:max{{{WAVE}}}", "{{wave}} admitted"),
                   q(f"wave:gelombang_wave_quota:max{{{WAVE}}}", "{{wave}} quota"))),
            Panel("Joins per second by result", "new, existing (refresh), rejoined, refused.",
                  (q(f"wave_result:gelombang_joins:rate1m{{{WAVE}}}", "{{wave}} {{result}}"),),
                  unit="reqps"),
            Panel("Sessions ended and tickets abandoned per second",
                  "Completed by the origin, expired at session_ttl_s, skipped as abandoned.",
                  (q(f"wave:gelombang_sessions_completed:rate5m{{{WAVE}}}", "{{wave}} completed"),
                   q(f"wave:gelombang_sessions_expired:rate5m{{{WAVE}}}", "{{wave}} expired"),
                   q(f"wave:gelombang_abandoned:rate5m{{{WAVE}}}", "{{wave}} abandoned")),
                  unit="reqps"),
        )),
        Row("What registrants experience", (
            Panel("Wait from join to admission (percentiles, 5m)",
                  "How long the people admitted in the last 5 minutes waited.",
                  (q(f"wave:gelombang_wait_seconds:p50_rate5m{{{WAVE}}}", "{{wave}} p50"),
                   q(f"wave:gelombang_wait_seconds:p90_rate5m{{{WAVE}}}", "{{wave}} p90"),
                   q(f"wave:gelombang_wait_seconds:p99_rate5m{{{WAVE}}}", "{{wave}} p99")),
                  unit="s"),
            Panel("ETA error (actual wait - promised wait, 5m)",
                  "Positive: people waited longer than the ETA shown at join.",
                  (q(f"wave:gelombang_eta_error_seconds:mean_rate5m{{{WAVE}}}", "{{wave}} mean"),
                   q(f"wave:gelombang_eta_error_seconds:p10_rate5m{{{WAVE}}}", "{{wave}} p10"),
                   q(f"wave:gelombang_eta_error_seconds:p90_rate5m{{{WAVE}}}", "{{wave}} p90")),
                  unit="s"),
            Panel("Status polls per second by state", "Every waiting page polls this.",
                  (q(f"wave_state:gelombang_status_polls:rate1m{{{WAVE}}}", "{{wave}} {{state}}"),),
                  unit="reqps"),
            Panel("Rate-limited requests per second by rule",
                  "Requests refused with 429 (bots, refresh storms).",
                  (q("rule:gelombang_rate_limited:rate1m", "{{rule}}"),), unit="reqps"),
        )),
        Row("Autopilot", (
            Panel("Autopilot target against the origin's latency",
                  "The concurrency the autopilot decided (applied as max_active when on), the "
                  "sessions really active, and the origin's latency it read (right axis; its "
                  "target is the wave's latency_target_s). A target at its floor with people "
                  "waiting pages (GelombangAutopilotAtFloor).",
                  (q(f"max by (wave) (gelombang_autopilot_target_active{{{WAVE}}})", "{{wave}} target"),
                   q(f"wave:gelombang_sessions_active:max{{{WAVE}}}", "{{wave}} active"),
                   q(f"max by (wave) (gelombang_autopilot_latency_seconds{{{WAVE}}})", "{{wave}} origin latency (s)")),
                  width=12,
                  extra={"fieldConfig": {"defaults": {"unit": "short", "color": {"mode": "palette-classic"}}, "overrides": [
                      {"matcher": {"id": "byRegexp", "options": ".*latency.*"},
                       "properties": [{"id": "custom.axisPlacement", "value": "right"},
                                      {"id": "unit", "value": "s"}]}]}}),
            Panel("Autopilot: origin errors and the admission rate it set",
                  "The origin's error ratio the autopilot read (its error_target breached: the "
                  "target drops) and admit_rate = target / min(measured session time, planned session).",
                  (q(f"max by (wave) (gelombang_autopilot_error_ratio{{{WAVE}}})", "{{wave}} origin errors"),
                   q(f"max by (wave) (gelombang_autopilot_admit_rate{{{WAVE}}})", "{{wave}} admit_rate (/s)")),
                  width=8,
                  extra={"fieldConfig": {"defaults": {"unit": "percentunit", "color": {"mode": "palette-classic"}}, "overrides": [
                      {"matcher": {"id": "byRegexp", "options": ".*admit_rate.*"},
                       "properties": [{"id": "custom.axisPlacement", "value": "right"},
                                      {"id": "unit", "value": "reqps"}]}]}}),
            Panel("Autopilot decisions per interval",
                  "increase, decrease, hold, stale (a signal missing: it held), manual_hold "
                  "(an operator's change stands).",
                  (q(f"sum by (wave, action) (increase(gelombang_autopilot_decisions_total{{{WAVE}}}[{RATE}]))",
                     "{{wave}} {{action}}"),),
                  width=4),
        )),
        Row("Call-backs (people away from the page)", (
            Panel("Opted in, told, called and back",
                  "Holders who opted in per minute by channel; holders waiting to be told; "
                  "holders the line reached while away (no slot held).",
                  (q(f"sum by (wave, channel) (increase(gelombang_callback_optins_total{{{WAVE}}}[1m]))", "{{wave}} opted in by {{channel}}/min"),
                   q(f"max by (wave) (gelombang_callback_pending{{{WAVE}}})", "{{wave}} waiting to be told"),
                   q(f"max by (wave) (gelombang_callback_called{{{WAVE}}})", "{{wave}} called, within the window")),
                  width=8),
            Panel("Messages by channel and outcome",
                  "Sent, failed (retried with back-off), dead (given up), dropped (the ticket "
                  "ended first). Pages when over 20% fail for 5m.",
                  (q(f"sum by (wave, channel, outcome) (rate(gelombang_callback_messages_total{{{WAVE}}}[{RATE}]))",
                     "{{wave}} {{channel}} {{outcome}}"),),
                  unit="ops", width=8),
            Panel("Outbox backlog and delivery time",
                  "Messages waiting to be sent; p95 from the message's creation to delivery.",
                  (q(f"max by (wave) (gelombang_callback_outbox{{{WAVE}}})", "{{wave}} backlog"),
                   q(f"histogram_quantile(0.95, sum by (channel, le) (rate(gelombang_callback_delivery_seconds_bucket[{RATE}])))",
                     "p95 delivery {{channel}} (s)")),
                  width=4),
            Panel("Called back and came back in time (30m)",
                  "Share of called holders whose window ended in the last 30 minutes who came "
                  "back in time; a warning below 50%.",
                  (q(f"sum by (wave) (increase(gelombang_callback_returns_total{{{WAVE}, outcome=\"returned\"}}[30m])) / sum by (wave) (increase(gelombang_callback_returns_total{{{WAVE}}}[30m]))",
                     "{{wave}}"),),
                  unit="percentunit", kind="stat", width=4, thresholds=((0.0, "red"), (0.5, "orange"), (0.8, "green"))),
        )),
        Row("Origin health", (
            Panel("Origin in-flight vs capacity", "Requests being served against capacity.",
                  (q("sum by (job) (gelombang_origin_inflight)", "{{job}} in-flight"),
                   q("sum by (job) (gelombang_origin_capacity)", "{{job}} capacity")),
                  width=8),
            Panel("Origin saturation (1m)", "In-flight / capacity; pages above 90% for 5m.",
                  (q("job:gelombang_origin_saturation:ratio_avg1m", "{{job}}"),),
                  unit="percentunit", width=8, thresholds=((0.75, "orange"), (0.9, "red"))),
            Panel("Origin 5xx ratio (5m)", "Share of origin responses that were 5xx.",
                  (q("job:gelombang_origin_requests_5xx:ratio_rate5m", "{{job}}"),),
                  unit="percentunit", width=8, thresholds=((0.01, "orange"), (0.05, "red"))),
            Panel("Origin responses per second by step and class", "",
                  (q("job_step_status_class:gelombang_origin_requests:rate1m",
                     "{{step}} {{status_class}}"),),
                  unit="reqps", width=8),
            Panel("Origin p99 latency by step (5m)", "",
                  (q("job_step:gelombang_origin_request_duration_seconds:p99_rate5m", "{{step}}"),),
                  unit="s", width=8),
            Panel("Registrations completed and requests rejected per second",
                  "Useful throughput against refusals (overload, timeout, invalid token).",
                  (q("job:gelombang_origin_registrations_completed:rate1m", "completed"),
                   q("job_reason:gelombang_origin_rejected:rate1m", "rejected {{reason}}")),
                  unit="reqps", width=8),
        )),
    ]  # fmt: skip
    return dashboard_json(
        "gelombang-wave-overview",
        "Gelombang / Wave overview",
        "For the SRE on duty during a wave opening: line, admissions against target, "
        "sessions against max_active, waits, ETA error and origin health.",
        [variable("wave", "Wave", "label_values(gelombang_queue_waiting, wave)")],
        rows,
    )


def service() -> dict[str, Any]:
    by_route = f'{JOB}, route=~"$route"'
    rows = [
        Row("Requests (RED by route)", (
            Panel("Requests per second by route and status class", "",
                  (q(f"sum by (route, status_class) (rate(gelombang_http_request_duration_seconds_count{{{by_route}}}[{RATE}]))",
                     "{{route}} {{status_class}}"),),
                  unit="reqps"),
            Panel("5xx ratio (5m)", "Pages above 1% for 5m (GelombangQueue5xxRatioHigh).",
                  (q(f"job:gelombang_http_requests_5xx:ratio_rate5m{{{JOB}}}", "{{job}}"),),
                  unit="percentunit", thresholds=((0.001, "orange"), (0.01, "red"))),
            Panel("p50 latency by route", "",
                  (q(f"histogram_quantile(0.5, sum by (route, le) (rate(gelombang_http_request_duration_seconds_bucket{{{by_route}}}[{RATE}])))",
                     "{{route}}"),),
                  unit="s"),
            Panel("p99 latency by route", "Status p99 above 250 ms for 10m pages.",
                  (q(f"histogram_quantile(0.99, sum by (route, le) (rate(gelombang_http_request_duration_seconds_bucket{{{by_route}}}[{RATE}])))",
                     "{{route}}"),),
                  unit="s", thresholds=((0.025, "orange"), (0.25, "red"))),
        )),
        Row("Redis", (
            Panel("Redis round trips per second by operation", "",
                  (q(f"sum by (op) (rate(gelombang_redis_call_duration_seconds_count{{{JOB}}}[{RATE}]))", "{{op}}"),),
                  unit="ops", width=8),
            Panel("Redis p99 round trip by operation", "",
                  (q(f"histogram_quantile(0.99, sum by (op, le) (rate(gelombang_redis_call_duration_seconds_bucket{{{JOB}}}[{RATE}])))",
                     "{{op}}"),),
                  unit="s", width=8),
            Panel("Redis errors per second by operation",
                  "Each error is a 503 store_unavailable for some request.",
                  (q(f"sum by (op) (rate(gelombang_redis_errors_total{{{JOB}}}[{RATE}]))", "{{op}}"),),
                  unit="ops", width=8),
        )),
        Row("Processes", (
            Panel("Event-loop lag by instance (p50, p99)",
                  "How late each replica's loop runs due timers; p99 above 100 ms for 5m pages.",
                  (q(f"histogram_quantile(0.5, sum by (instance, le) (rate(gelombang_event_loop_lag_seconds_bucket{{{JOB}}}[{RATE}])))",
                     "{{instance}} p50"),
                   q(f"histogram_quantile(0.99, sum by (instance, le) (rate(gelombang_event_loop_lag_seconds_bucket{{{JOB}}}[{RATE}])))",
                     "{{instance}} p99")),
                  unit="s", width=8, thresholds=((0.1, "red"),)),
            Panel("Requests per Redis round trip (batch size)",
                  "Concurrent requests coalesced into one pipeline: mean and p99 by operation.",
                  (q(f"sum by (op) (rate(gelombang_batch_size_sum{{{JOB}}}[{RATE}])) / sum by (op) (rate(gelombang_batch_size_count{{{JOB}}}[{RATE}]))",
                     "{{op}} mean"),
                   q(f"histogram_quantile(0.99, sum by (op, le) (rate(gelombang_batch_size_bucket{{{JOB}}}[{RATE}])))",
                     "{{op}} p99")),
                  width=8),
            Panel("Scrape targets up", "1 = Prometheus scraped the target.",
                  (q('up{job=~"gelombang-.*"}', "{{job}} {{instance}}"),),
                  width=8),
            Panel("Rate-limited requests per second by rule", "",
                  (q(f"sum by (rule) (rate(gelombang_rate_limited_total{{{JOB}}}[{RATE}]))", "{{rule}}"),),
                  unit="reqps"),
            Panel("Admin actions (per 5m)", "Every admin API change; details are in the logs.",
                  (q(f"sum by (action) (increase(gelombang_admin_actions_total{{{JOB}}}[5m]))", "{{action}}"),),
                  kind="timeseries"),
            Panel("Connections: open and the shedding bound, by instance",
                  "The bound follows each replica's requests/s x target_queue_delay_s unless "
                  "max_connections is pinned; open at the bound = new connections refused.",
                  (q(f"sum by (instance) (gelombang_connections_open{{{JOB}}})", "{{instance}} open"),
                   q(f"sum by (instance) (gelombang_adaptive_max_connections{{{JOB}}})",
                     "{{instance}} bound")),
                  unit="short"),
            Panel("Queueing delay the bounds act on, by instance",
                  "Smoothed wait of a request for one turn of the event loop; the adaptive "
                  "bounds aim at target_queue_delay_s (30 ms).",
                  (q(f"max by (instance) (gelombang_adaptive_queue_delay_seconds{{{JOB}}})", "{{instance}}"),),
                  unit="s", thresholds=((0.03, "orange"), (0.1, "red"))),
        )),
    ]  # fmt: skip
    return dashboard_json(
        "gelombang-service",
        "Gelombang / Queue service",
        "RED metrics by route, Redis round trips, event-loop lag and batching of the queue "
        "service replicas.",
        [
            variable(
                "job", "Job", "label_values(gelombang_http_request_duration_seconds_count, job)"
            ),
            variable(
                "route",
                "Route",
                "label_values(gelombang_http_request_duration_seconds_count, route)",
            ),
        ],
        rows,
    )


DASHBOARDS = {"wave-overview.json": wave_overview, "service.json": service}


def rendered() -> dict[str, str]:
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str]) -> int:
    stale = []
    for name, text in rendered().items():
        path = OUT_DIR / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date: {stale}; run dashboards/build_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
