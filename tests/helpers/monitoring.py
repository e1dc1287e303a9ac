"""The dashboards and rule files we ship, read as the monitoring tests check them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

from tests.helpers.paths import REPO

DASHBOARDS = REPO / "dashboards"
GRAFANA = DASHBOARDS / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
RULE_FILES = sorted((DASHBOARDS / "rules").glob("*.yml")) + sorted(
    (DASHBOARDS / "alerts").glob("*.yml")
)

# What Grafana puts in place of its variables, so an expression can be checked as plain PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$wave": ".*",
    "$job": ".*",
    "$route": ".*",
}


def dashboards() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in DASHBOARD_FILES:
        yield path.name, json.loads(path.read_text())


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation query."""
    found: list[tuple[str, str]] = []
    for name, board in dashboards():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{name}: {panel['title']} [{target['refId']}]", target["expr"]))
        for annotation in board["annotations"]["list"]:
            found.append((f"{name}: annotation {annotation['name']}", annotation["expr"]))
    return found


def rule_expressions() -> list[tuple[str, str]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found.append((f"{path.name}: {rule.get('record') or rule['alert']}", rule["expr"]))
    return found


def as_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr
