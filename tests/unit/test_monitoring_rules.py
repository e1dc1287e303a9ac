"""Recording and alert rules: valid for Debian's promtool, unit-tested, generated from the one
thresholds file, and every alert documented with a runbook section."""

from __future__ import annotations

import re
import runpy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.paths import REPO
from tests.helpers.tools import require_tool

DASHBOARDS = REPO / "dashboards"
RULE_FILES = sorted((DASHBOARDS / "rules").glob("*.yml")) + sorted(
    (DASHBOARDS / "alerts").glob("*.yml")
)
RUNBOOK = REPO / "docs" / "runbook.md"

# Alerts the issue asks for, by what they watch; a rename must keep each one covered.
REQUIRED_ALERTS = {
    "GelombangQueueStalled",
    "GelombangAdmissionRateLow",
    "GelombangOriginSaturated",
    "GelombangOriginErrorRatioHigh",
    "GelombangQueue5xxRatioHigh",
    "GelombangStatusLatencyHigh",
    "GelombangRedisErrors",
    "GelombangEventLoopLagHigh",
    "GelombangTargetDown",
    "GelombangQueueTargetsAbsent",
}
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    executable = require_tool("promtool", package="prometheus")
    return subprocess.run(
        [executable, *args], capture_output=True, text=True, timeout=60, check=False
    )


def all_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "alert" in rule]


@pytest.mark.slow  # starts a process
def test_promtool_check_rules_accepts_every_rule_file() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.slow  # starts a process
def test_promtool_unit_tests_pass_for_every_alert() -> None:
    tests = sorted((DASHBOARDS / "tests").glob("*.yml"))
    assert tests
    result = promtool("test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_not_firing_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in (DASHBOARDS / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
                for alert in check["exp_alerts"]:
                    # exact annotations, not just "something fired"
                    assert set(alert["exp_annotations"]) == {
                        "summary",
                        "description",
                        "runbook_url",
                    }
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= REQUIRED_ALERTS
    assert names - firing == set(), "alerts without a firing test"
    assert names - quiet == set(), "alerts without a not-firing test"


def test_every_alert_has_severity_summary_description_and_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9-]", "", heading.strip().lower().replace(" ", "-"))
        for heading in re.findall(r"^#{2,4} (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("for"), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert "{{ $labels." in annotations["summary"] + annotations["description"] or (
            "absent(" in rule["expr"]
        ), f"{name} does not say which wave/job/instance"
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path.endswith("docs/runbook.md"), name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"docs/runbook.md has no section for {name}"


def test_recording_rules_follow_level_metric_operations_naming() -> None:
    records = [rule["record"] for rule in all_rules() if "record" in rule]
    assert "wave:gelombang_admissions:rate1m" in records
    for name in records:
        assert RECORD_NAME.match(name), name
        assert ":gelombang_" in name, name
    assert len(records) == len(set(records))


def test_alert_file_is_rendered_from_the_thresholds_file() -> None:
    module = runpy.run_path(str(DASHBOARDS / "render_alerts.py"))
    assert module["main"](["--check"]) == 0, "run .venv/bin/python dashboards/render_alerts.py"
    thresholds = yaml.safe_load((DASHBOARDS / "src" / "thresholds.yml").read_text())
    by_name = {rule["alert"]: rule for rule in alert_rules()}
    assert by_name["GelombangQueueStalled"]["for"] == thresholds["queue_stalled"]["for"]
    assert f"> {thresholds['queue_5xx']['ratio']}" in by_name["GelombangQueue5xxRatioHigh"]["expr"]


def test_render_refuses_a_placeholder_without_a_threshold() -> None:
    module = runpy.run_path(str(DASHBOARDS / "render_alerts.py"))
    with pytest.raises(KeyError, match=r"missing\.for"):
        module["render"]("for: <<missing.for>>\n", {})
    with pytest.raises(KeyError, match="unused"):
        module["render"]("for: 1m\n", {"unused": {"for": "1m"}})


@pytest.mark.slow  # starts a process
def test_prometheus_config_is_valid_with_the_rule_files(tmp_path: Path) -> None:
    """prometheus.yml names /etc/prometheus/... paths (as mounted by compose); check it with
    those paths pointed at the repository's folders."""
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml", "/etc/prometheus/alerts/*.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"gelombang-queue", "gelombang-origin"} <= set(jobs)
    queue_targets = jobs["gelombang-queue"]["static_configs"][0]["targets"]
    assert len(queue_targets) >= 2, "scrape every queue replica, not the load balancer"
    config["rule_files"] = [
        str(DASHBOARDS / "rules" / "*.yml"),
        str(DASHBOARDS / "alerts" / "*.yml"),
    ]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", result.stdout))
    assert found == len(all_rules()), result.stdout


def runbook_sections() -> dict[str, str]:
    """Heading -> body of every `##` and `###` section of the runbook."""
    parts = re.split(r"^#{2,3} (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {heading.strip(): body for heading, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_every_runbook_entry_says_what_to_type_and_what_to_tell_registrants() -> None:
    """An SRE at midnight pastes commands, and someone has to tell a million people what is
    happening: each alert's entry has literal commands and a message for registrants, and
    the runbook says how to postpone an opening."""
    from queue_service import metrics
    from queue_service.commands.wave import ACTIONS

    sections = runbook_sections()
    entries = {name: sections[name] for name in (r["alert"] for r in alert_rules())}
    entries["Postpone an opening"] = sections["Postpone an opening"]
    for name, body in entries.items():
        assert "```sh\n" in body, f"{name}: no command to paste"
        assert "**Tell registrants:**" in body, f"{name}: nothing to tell registrants"
    postpone = entries["Postpone an opening"]
    assert "gelombang wave pause $WAVE" in postpone and "--set opens_at=" in postpone
    assert "wave_already_opened" in postpone
    text = RUNBOOK.read_text()
    for action in re.findall(r"gelombang wave (\w+)", text):
        assert action in ACTIONS, action
    exposed = {m._name for m in vars(metrics).values() if hasattr(m, "_name")}
    for name in re.findall(r"\bgelombang_([a-z_]+?)(?:_total)?\b", text):
        named = f"gelombang_{name}"  # a whole name, or the prefix of a grep pattern
        assert any(e == named or e.startswith(named) for e in exposed), named
