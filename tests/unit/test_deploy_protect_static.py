"""The untested proxy examples (Traefik and Envoy are not packaged in Debian, so no test can run
them) at least parse, and ask the queue what the tested nginx and Caddy configurations ask:
the same route with the same style, the same headers, the same token names."""

from __future__ import annotations

from typing import Any

import yaml

from queue_service.http.proof import TOKEN_COOKIE, TOKEN_QUERY
from tests.helpers.paths import REPO

DEPLOY = REPO / "deploy"


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_traefik_asks_the_verify_route_as_caddy_does() -> None:
    config = load("traefik-protect.yml")
    auth = config["http"]["middlewares"]["gelombang"]["forwardAuth"]
    assert auth["address"].endswith("/api/v1/waves/prakerja-70/verify?proxy=forward")
    assert auth["authResponseHeaders"] == ["X-Gelombang-Subject"]
    assert "/api/v1/waves/prakerja-70/verify?proxy=forward" in (DEPLOY / "Caddyfile").read_text()
    routers = config["http"]["routers"]
    assert routers["registration"]["middlewares"] == ["gelombang"]
    assert "/w/" in routers["queue"]["rule"] and "/api/v1/" in routers["queue"]["rule"]


def test_envoy_checks_the_eddsa_token_against_the_queues_jwks() -> None:
    config = load("envoy-jwt.yaml")
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = manager["typed_config"]["http_filters"]
    jwt_filter = next(f for f in filters if f["name"] == "envoy.filters.http.jwt_authn")
    provider = jwt_filter["typed_config"]["providers"]["gelombang"]
    assert provider["issuer"] == "gelombang" and provider["audiences"] == ["prakerja-70"]
    assert provider["remote_jwks"]["http_uri"]["uri"].endswith("/.well-known/jwks.json")
    assert provider["from_params"] == [TOKEN_QUERY]
    assert provider["from_cookies"] == [TOKEN_COOKIE]
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    assert clusters == {"queue", "registration"}


def test_nginx_asks_the_verify_route_and_sends_refused_browsers_to_the_waiting_room() -> None:
    conf = (DEPLOY / "nginx-protect.conf").read_text()
    assert "proxy_pass http://queue/api/v1/waves/prakerja-70/verify;" in conf
    assert "error_page 401 = @waiting_room;" in conf
    assert "proxy_set_header X-Gelombang-Subject $gelombang_subject;" in conf
