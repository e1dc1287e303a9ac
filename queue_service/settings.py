"""Service settings: one frozen dataclass, built once from a TOML file, `GELOMBANG_*` environment
variables and command-line flags (flags win over environment, environment over file)."""

from __future__ import annotations

import functools
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from queue_service.ratelimit import RateLimitRules

ENV_PREFIX = "GELOMBANG_"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    """Address to listen on (use 0.0.0.0 in a container)."""
    port: int = 8080
    workers: int = 1
    """Processes sharing the port with SO_REUSEPORT, all against the same Redis."""
    redis_url: str | None = None
    """`redis://host:port/db`, or `redis+cluster://host:port[,host:port...]` for a Redis Cluster
    (see redis_client.py); none = start a private embedded redis-server."""
    state_dir: Path = Path(".state")
    """Embedded Redis data (AOF), development signing keys."""
    config: Path | None = None
    """TOML file with `[service]` settings, `[rate_limits]` and `[[waves]]`."""
    admin_token: str | None = None
    """Bearer token for the admin API, acting as operator "admin"; none (and no admin_tokens)
    = admin API disabled."""
    admin_tokens: tuple[str, ...] = ()
    """Named operator tokens, "name:token" each (GELOMBANG_ADMIN_TOKENS, comma-separated), so
    the audit log says who acted."""
    signing_keys: tuple[Path, ...] = ()
    """Ed25519 PEM files: the first signs admission tokens, all are published in the JWKS.
    None = a development key generated under state_dir/keys."""
    secret: str | None = None
    """Key for ticket MACs and registrant hashes, identical on every replica. None = one
    generated once and kept in Redis (shared by every process using that Redis)."""
    issuer: str = "gelombang"
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of load balancers whose X-Forwarded-For is believed."""
    max_body_bytes: int = 4096
    max_inflight: int = 1024
    """Requests in flight per process beyond which new ones get a fast 503 (overload.py)."""
    max_lag_s: float = 0.25
    """Event-loop lag beyond which new requests get a fast 503: the process is out of CPU."""
    backlog: int = 4096
    """Listen backlog: connections the kernel holds while the process accepts (a wave
    opening's burst of new connections must not overflow it)."""
    keepalive_timeout_s: float = 15.0
    """Idle keep-alive connections, and connections whose request headers have not arrived
    whole (slow headers), are closed after this long."""
    redis_timeout_s: float = 1.0
    """Upper bound on one Redis round trip before answering 503."""
    admission_interval_s: float = 0.05
    """How often each process runs the admission step for each live wave."""
    log_format: str = "json"
    log_level: str = "INFO"
    rate_limits: RateLimitRules = field(default_factory=RateLimitRules)
    waves: tuple[Mapping[str, Any], ...] = ()
    """Wave definitions loaded from the config file (validated by waves.WaveConfig)."""

    @functools.cached_property
    def admin_tokens_by_name(self) -> dict[str, str]:
        tokens = {}
        for item in self.admin_tokens:
            name, _, token = item.partition(":")
            tokens[name.strip()] = token.strip()
        if self.admin_token:
            tokens.setdefault("admin", self.admin_token)
        return tokens

    @functools.cached_property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """Parsed once per process (read on every request)."""
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies)


_SCALAR_FIELDS = {f.name: f for f in fields(Settings)} | {}
_NOT_FROM_ENV = {"rate_limits", "waves"}


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in {"port", "workers", "max_body_bytes", "max_inflight", "backlog"}:
        return int(value)
    if name in {"redis_timeout_s", "admission_interval_s", "max_lag_s", "keepalive_timeout_s"}:
        return float(value)
    if name in {"state_dir", "config"}:
        return Path(value)
    if name == "signing_keys":
        items = value.split(",") if isinstance(value, str) else value
        return tuple(Path(str(p).strip()) for p in items if str(p).strip())
    if name == "admin_tokens":
        items = value.split(",") if isinstance(value, str) else value
        named = tuple(str(p).strip() for p in items if str(p).strip())
        for item in named:
            user, sep, token = item.partition(":")
            if not sep or not user.strip() or len(token.strip()) < 16:
                raise ValueError(
                    "admin_tokens: each entry is name:token, with a token of 16+ characters"
                )
        return named
    if name == "trusted_proxies":
        items = value.split(",") if isinstance(value, str) else value
        cidrs = tuple(str(p).strip() for p in items if str(p).strip())
        for cidr in cidrs:
            ipaddress.ip_network(cidr, strict=False)
        return cidrs
    return str(value)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """File < environment < overrides (the command-line flags that were given)."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, Any] = {}

    config_path = overrides.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    file_data: dict[str, Any] = {}
    if config_path:
        with open(config_path, "rb") as fh:
            file_data = tomllib.load(fh)
        unknown = set(file_data) - {"service", "rate_limits", "waves"}
        if unknown:
            raise ValueError(f"unknown sections in {config_path}: {sorted(unknown)}")
        for key, value in file_data.get("service", {}).items():
            if key not in _SCALAR_FIELDS or key in _NOT_FROM_ENV:
                raise ValueError(f"unknown setting [service].{key} in {config_path}")
            values[key] = _coerce(key, value)
        values["config"] = Path(config_path)

    for name in _SCALAR_FIELDS:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if name not in _NOT_FROM_ENV and env_value not in (None, ""):
            values[name] = _coerce(name, env_value)
    for name, value in overrides.items():
        values[name] = _coerce(name, value)

    rules = RateLimitRules.from_mapping(file_data.get("rate_limits", {}))
    switch = environ.get(ENV_PREFIX + "RATE_LIMITS")
    if switch is not None and switch.strip().lower() in {"off", "0", "false", "no"}:
        rules = replace(rules, enabled=False)
    values["rate_limits"] = rules
    values["waves"] = tuple(file_data.get("waves", ()))
    settings = Settings(**values)
    if settings.workers < 1:
        raise ValueError("workers must be at least 1")
    return settings
