"""The compose deployment, checked without Docker (these machines have no Docker engine):
docker-compose.yml, the Dockerfile, deploy/nginx.conf, the env file example and the waves
example, against each other, the repository, the Prometheus scrape config and the real
`gelombang` argument parser."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gelombang.cli import build_parser
from queue_service.settings import Settings, load_settings
from queue_service.waves import parse_wave
from tests.helpers.paths import REPO

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
NGINX = REPO / "deploy" / "nginx.conf"
ENV_EXAMPLE = REPO / "deploy" / "gelombang.env.example"
WAVES_EXAMPLE = REPO / "deploy" / "waves.example.toml"
PROMETHEUS = REPO / "dashboards" / "prometheus.yml"
DEPLOY_DOC = REPO / "docs" / "deploy.md"

# Files the operator creates before `docker compose up` (git-ignored, documented in
# docs/deploy.md): they may be missing from the repository, nothing else may.
USER_CREATED = {"deploy/gelombang.env", "deploy/secrets/signing.pem"}
REQUIRED_SERVICES = {
    "redis", "queue1", "queue2", "lb", "origin", "prometheus", "grafana",
    "locust-master", "locust-worker",
}  # fmt: skip
QUEUE_SERVICES = ("queue1", "queue2")
SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE|API_KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def flag_value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def listening_port(service: dict[str, Any]) -> int:
    """The port a service listens on inside the compose network."""
    command = service.get("command") or []
    if isinstance(command, list) and "--port" in command:
        return int(flag_value(command, "--port"))
    image = service["image"]
    known = {"nginx": 8080, "prom/prometheus": 9090, "grafana/grafana": 3000, "redis": 6379}
    return next(port for prefix, port in known.items() if image.startswith(prefix))


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            yield source, target


def repo_path(relative: str) -> str:
    return str(Path(relative).as_posix()).removeprefix("./")


# ---------------------------------------------------------------------------- compose


def test_every_part_of_the_deployment_is_a_service(services: dict[str, Any]) -> None:
    assert set(services) >= REQUIRED_SERVICES
    assert services["locust-worker"]["deploy"]["replicas"] >= 2


def test_images_are_pinned_to_a_tag(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":")
        assert repository and tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        assert re.search(r"\d", tag), f"{name}: tag {tag!r} names no version"


def test_every_service_has_a_health_check(services: dict[str, Any]) -> None:
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), name
        assert service["healthcheck"].get("interval"), name


def test_dependencies_wait_for_health(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition["condition"] == "service_healthy", name
    for name in QUEUE_SERVICES:
        assert "redis" in services[name]["depends_on"]
    assert set(QUEUE_SERVICES) <= set(services["lb"]["depends_on"])


def test_redis_keeps_an_append_only_file_on_a_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_every_referenced_file_exists_or_is_created_by_the_operator(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    referenced: set[str] = set()
    for service in services.values():
        referenced.update(repo_path(source) for source, _ in bind_mounts(service))
        referenced.update(repo_path(path) for path in service.get("env_file", []))
        build = service.get("build")
        if build:
            referenced.add(repo_path(build["context"]))
    for secret in compose["secrets"].values():
        referenced.add(repo_path(secret["file"]))
    missing = {path for path in referenced if not (REPO / path).exists()}
    assert missing <= USER_CREATED, f"missing from the repository: {missing - USER_CREATED}"
    # What the operator creates is documented, and git-ignored so it is never committed.
    doc = DEPLOY_DOC.read_text()
    ignored = [
        line.strip()
        for line in (REPO / "deploy" / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in USER_CREATED:
        assert path in doc, f"docs/deploy.md does not explain {path}"
        assert any(path.removeprefix("deploy/").startswith(rule) for rule in ignored), path
    assert (REPO / "deploy" / "gelombang.env.example").exists()


def test_monitoring_mounts_match_the_prometheus_config(services: dict[str, Any]) -> None:
    prometheus = dict(bind_mounts(services["prometheus"]))
    assert prometheus["./dashboards/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(PROMETHEUS.read_text())
    for pattern in config["rule_files"]:
        folder = str(Path(pattern).parent)
        source = next(s for s, t in prometheus.items() if t == folder)
        assert list((REPO / repo_path(source)).glob(Path(pattern).name)), pattern
    grafana = dict(bind_mounts(services["grafana"]))
    assert grafana["./dashboards/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana["./dashboards/grafana/dashboards"] == "/var/lib/grafana/dashboards"
    assert list((REPO / "dashboards" / "grafana" / "dashboards").glob("*.json"))


def test_no_secret_values_in_the_compose_file(services: dict[str, Any]) -> None:
    for name, service in services.items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use a mapping for environment"
        for key, value in environment.items():
            if SECRET_WORDS.search(key):
                assert str(value).startswith("${"), f"{name}: {key} has a value in the file"
    text = COMPOSE.read_text()
    assert "BEGIN PRIVATE KEY" not in text
    assert not re.search(r"Bearer\s+\S", text)


def test_queue_and_origin_commands_parse_with_the_real_cli(services: dict[str, Any]) -> None:
    parser = build_parser()
    for name in (*QUEUE_SERVICES, "origin"):
        command = services[name]["command"]
        args = parser.parse_args(command)  # unknown flags or bad values exit here
        assert args.command == command[0]
    queue = parser.parse_args(services["queue1"]["command"])
    assert queue.host == "0.0.0.0" and queue.redis_url == "redis://redis:6379/0"
    assert queue.config == "/etc/gelombang/waves.toml"
    assert services["queue1"]["command"] == services["queue2"]["command"]
    origin = parser.parse_args(services["origin"]["command"])
    assert origin.host == "0.0.0.0"
    jwks = urlsplit(origin.jwks_url)
    assert jwks.hostname == "lb" and jwks.path == "/.well-known/jwks.json"
    assert jwks.port == listening_port(services["lb"])


@pytest.mark.slow  # starts a process
def test_locust_commands_use_flags_locust_knows(services: dict[str, Any]) -> None:
    # One subprocess: importing Locust here would monkey-patch the test process.
    help_text = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    for name in ("locust-master", "locust-worker"):
        command = services[name]["command"]
        assert command[:2] == ["-f", "loadtests/locustfile.py"]
        assert (REPO / command[1]).exists()
        for flag in (part for part in command if part.startswith("--")):
            assert re.search(rf"(^|\s){re.escape(flag)}[\s,=]", help_text), f"{name}: {flag}"
    assert flag_value(services["locust-worker"]["command"], "--master-host") == "locust-master"
    environment = services["locust-master"]["environment"]
    for variable in ("LOCUST_HOST", "LOCUST_ORIGIN_URL"):
        url = urlsplit(environment[variable])
        assert url.hostname in services, variable
        assert url.port == listening_port(services[url.hostname]), variable


def test_nginx_balances_every_queue_replica(services: dict[str, Any]) -> None:
    conf = NGINX.read_text()
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.MULTILINE)
    assert {host for host, _ in upstreams} == set(QUEUE_SERVICES)
    for host, port in upstreams:
        assert int(port) == listening_port(services[host]), host
    listen = int(re.search(r"listen\s+(\d+)", conf).group(1))  # type: ignore[union-attr]
    assert listen == listening_port(services["lb"])
    published = services["lb"]["ports"][0].rsplit(":", 1)[-1]
    assert int(published) == listen
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in conf
    size = re.search(r"client_max_body_size\s+(\d+)([km]?)", conf)
    assert size and size.group(2) in ("", "k") and int(size.group(1)) <= 64
    assert "/lb-health" in conf and "lb-health" in " ".join(services["lb"]["healthcheck"]["test"])
    # What nginx answers itself keeps the service's JSON error shape (and Retry-After on 503).
    for code in ("413", "502 503 504"):
        assert re.search(rf"error_page {code} = @\w+;", conf), code
    assert '"code": "payload_too_large"' in conf and "add_header Retry-After" in conf


def test_prometheus_scrapes_services_that_exist_on_their_ports(services: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    scraped = set()
    for target in targets:
        host, port = target.rsplit(":", 1)
        if host == "localhost":
            continue  # Prometheus scraping itself
        assert host in services, f"scrape target {target} is not a compose service"
        assert int(port) == listening_port(services[host]), target
        scraped.add(host)
    assert scraped >= {*QUEUE_SERVICES, "origin"}
    assert "lb" not in scraped  # each replica is scraped itself, never through the balancer


def test_trusted_proxy_is_the_load_balancer_address(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    lb_address = services["lb"]["networks"]["gelombang"]["ipv4_address"]
    env = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["GELOMBANG_TRUSTED_PROXIES"] == f"{lb_address}/32"
    subnet = compose["networks"]["gelombang"]["ipam"]["config"][0]["subnet"]
    assert lb_address.rsplit(".", 1)[0] == subnet.split("/")[0].rsplit(".", 1)[0]


# ---------------------------------------------------------------------------- env and waves


def test_env_example_names_every_setting_and_holds_no_secret() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    names = set()
    for line in lines:
        match = re.match(r"^#?\s*(GELOMBANG_[A-Z_]+)=(.*)$", line)
        if match:
            names.add(match.group(1))
            if SECRET_WORDS.search(match.group(1)) and not line.startswith("#"):
                assert match.group(2) == "change-me", line
    env_fields = {f"GELOMBANG_{f.name.upper()}" for f in fields(Settings)} - {
        "GELOMBANG_RATE_LIMITS",  # a switch here, a table in the config file
        "GELOMBANG_WAVES",  # config file only
    }
    assert names - {"GELOMBANG_RATE_LIMITS"} == env_fields
    grafana = [line for line in lines if line.startswith("GF_SECURITY_ADMIN_PASSWORD=")]
    assert grafana == ["GF_SECURITY_ADMIN_PASSWORD=change-me"]
    # The example's real values load as settings (with placeholders for the secrets).
    environ = dict(line.split("=", 1) for line in lines if line.startswith("GELOMBANG_"))
    settings = load_settings(environ=environ)
    assert settings.signing_keys == (Path("/run/secrets/signing.pem"),)


def test_waves_example_is_valid_and_has_the_rehearsal_wave(services: dict[str, Any]) -> None:
    settings = load_settings({"config": str(WAVES_EXAMPLE)}, environ={})
    waves = {wave["id"]: parse_wave(wave["id"], wave) for wave in settings.waves}
    rehearsal = services["origin"]["command"][services["origin"]["command"].index("--wave") + 1]
    assert rehearsal in waves
    assert services["locust-master"]["environment"]["LOCUST_WAVE"] == rehearsal
    origin = urlsplit(waves[rehearsal].origin_url)
    assert origin.hostname == "origin" and origin.port == listening_port(services["origin"])
    mounts = dict(bind_mounts(services["queue1"]))
    assert mounts["./deploy/waves.example.toml"] == "/etc/gelombang/waves.toml"


def test_signing_key_is_a_compose_secret_where_the_env_file_says(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    assert compose["secrets"]["signing_key"]["file"] == "./deploy/secrets/signing.pem"
    for name in QUEUE_SERVICES:
        secret = services[name]["secrets"][0]
        assert secret == {"source": "signing_key", "target": "signing.pem"}  # /run/secrets/...
        assert services[name]["env_file"] == ["deploy/gelombang.env"]


# ---------------------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    for raw in re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            current = line.split()[-1]
            stages[current] = []
        stages[current].append(line)
    return stages


def test_dockerfile_builds_the_project_as_a_non_root_user(services: dict[str, Any]) -> None:
    stages = dockerfile_stages()
    base = next(iter(stages.values()))[0].split()[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    for stage, lines in stages.items():
        users = [line.split()[1] for line in lines if line.startswith("USER ")]
        assert users and users[-1].split(":")[0] not in ("root", "0"), stage
    service = stages["service"]
    assert any(re.search(r"pip install \.(\s|$)", line) for line in service)
    assert 'ENTRYPOINT ["gelombang"]' in service
    assert not any("redis-server" in line for line in service)  # compose runs Redis
    for line in (line for lines in stages.values() for line in lines):
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    # Every build target compose asks for is a stage.
    for name, svc in services.items():
        if "build" in svc:
            assert svc["build"]["target"] in stages, name


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".state", "deploy/secrets", ".env"):
        assert entry in ignored, entry
