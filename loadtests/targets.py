"""Where a load test may point, and the plain HTTP calls made outside user classes (wave set-up,
metric sampling, checks).

A rehearsal hammers what it targets, so by default it targets this machine only: a non-loopback
queue or origin must be named explicitly on the command line (`--host`, `--origin-url`). The
origin address is never taken from the queue's redirect, which might point at a real
production origin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from prometheus_client.parser import text_string_to_metric_families

DEFAULT_HOST = "http://127.0.0.1:8080"
DEFAULT_ORIGIN_URL = "http://127.0.0.1:8090"
HTTP_TIMEOUT_S = 5.0


class TargetRefused(ValueError):
    """A target address the load test will not send traffic to."""


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target(url: str, *, explicit: bool, what: str) -> str:
    """`url` without a trailing slash; refuses a remote target the user did not name."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TargetRefused(f"{what} must be an absolute http(s) URL, got {url!r}")
    if not explicit and not is_loopback_url(url):
        raise TargetRefused(
            f"{what} {url} is not on this machine; pass it explicitly to load-test it"
        )
    return url.rstrip("/")


def check_public_url(url: str, *, what: str) -> str:
    """`url` as given (a proxy may route on its trailing slash), once it is an absolute http(s)
    URL; empty stays empty (not given). For an address others call us at, never one we send
    load to."""
    if url:
        check_target(url, explicit=True, what=what)
    return url


def admin_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def put_wave(host: str, token: str, wave: str, config: Mapping[str, Any]) -> dict[str, Any]:
    response = requests.put(
        f"{host}/admin/v1/waves/{wave}",
        json=dict(config),
        headers=admin_headers(token),
        timeout=HTTP_TIMEOUT_S,
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def get_wave_admin(host: str, token: str, wave: str) -> dict[str, Any]:
    response = requests.get(
        f"{host}/admin/v1/waves/{wave}", headers=admin_headers(token), timeout=HTTP_TIMEOUT_S
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus text endpoint as {(sample name, sorted labels): value}."""
    response = requests.get(url, timeout=HTTP_TIMEOUT_S)
    response.raise_for_status()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric_sum(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    **labels: str,
) -> float:
    """Sum of every sample called `name` whose labels include `labels`."""
    total = 0.0
    for (sample_name, sample_labels), value in samples.items():
        if sample_name == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()):
            total += value
    return total
