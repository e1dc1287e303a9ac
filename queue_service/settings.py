"""Service settings: one frozen dataclass, built once from a TOML file, `GELOMBANG_*` environment
variables and command-line flags (flags win over environment, environment over file)."""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from queue_service.adaptive_limit import TARGET_QUEUE_DELAY_S
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
    public_url: str | None = None
    """The queue's public base URL (https://antrean.example.go.id): the verify route sends a
    browser without a valid admission token to `<public_url>/w/<wave>`; none = `/w/<wave>` on
    the origin's own host (its proxy routes /w/ and /api/ to the queue)."""
    contact_key: str | None = None
    """Call-backs: the key contacts are encrypted with at rest (AES-256-GCM), base64 of 32
    bytes, identical on every replica. None = a development key generated under state_dir."""
    webhook_secret: str | None = None
    """Call-backs: the key of the webhook's HMAC-SHA256 signature (SMS and WhatsApp gateways
    check it), base64 of 32 bytes. None = a development key generated under state_dir."""
    smtp_url: str | None = None
    """Call-backs by e-mail: `smtp://user:password@host:port` (STARTTLS when the server offers
    it; `?starttls=require` insists) or `smtps://...` (TLS from the start). None = no e-mail."""
    smtp_from: str | None = None
    """The From address of call-back e-mails (required with smtp_url)."""
    vapid_key: Path | None = None
    """Call-backs by Web Push: the VAPID private key (PEM, P-256), identical on every replica.
    None = a development key generated under state_dir."""
    vapid_subject: str | None = None
    """Web Push: who to contact about this sender (`mailto:` or an https URL); None = the
    public_url, else mailto:noreply@localhost."""
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of load balancers whose X-Forwarded-For is believed."""
    max_body_bytes: int = 4096
    max_inflight: int | None = None
    """Requests of one route in flight per process beyond which new ones get a fast 503
    (overload.py). None ("auto"): the adaptive bound of adaptive_limit.py; a number pins it."""
    max_connections: int | None = None
    """Open connections per process beyond which a new one gets a canned 503 and is closed.
    None ("auto"): they follow the process's throughput × `target_queue_delay_s` (Little's
    law, adaptive_limit.py), the youngest retired when the bound falls; a number pins it."""
    target_queue_delay_s: float = TARGET_QUEUE_DELAY_S
    """The queueing delay the adaptive bounds aim at: how long an accepted request may wait for
    the event loop on average (the p99 of accepted requests stays under 250 ms)."""
    max_lag_s: float = 0.25
    """Event-loop lag beyond which new requests get a fast 503: the process is out of CPU."""
    backlog: int = 4096
    """Listen backlog: connections the kernel holds while the process accepts (a wave
    opening's burst of new connections must not overflow it)."""
    body_timeout_s: float = 10.0
    """A request body that has not arrived whole after this long is refused (408): a client
    trickling a body must not hold a connection and a handler for minutes."""
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
INTEGERS = {"port", "workers", "max_body_bytes", "backlog"}
AUTO_OR_INTEGERS = {"max_inflight", "max_connections"}
"""Whole numbers that pin a bound, or "auto" (None) for the adaptive one."""
AUTO = "auto"
MAX_TARGET_QUEUE_DELAY_S = 10.0
FLOATS = {
    "redis_timeout_s",
    "target_queue_delay_s",
    "admission_interval_s",
    "max_lag_s",
    "body_timeout_s",
    "keepalive_timeout_s",
}
EXPECTED = {
    **{name: "a whole number" for name in INTEGERS},
    **{name: f"{AUTO} or a whole number" for name in AUTO_OR_INTEGERS},
    **{name: "a number" for name in FLOATS},
    "trusted_proxies": "comma-separated networks (CIDRs, e.g. 10.0.0.0/8)",
}
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class StartupError(Exception):
    """The service cannot start (its port is taken, Redis does not answer...): one line."""


class SettingsError(ValueError):
    """A setting that cannot be used; the message names where it came from (file and line,
    environment variable or flag) in one line."""


def _whole_number(name: str, value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(name)
    return int(value)


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in AUTO_OR_INTEGERS:
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return None
        return _whole_number(name, value)
    if name in INTEGERS:
        return _whole_number(name, value)
    if name in FLOATS:
        if isinstance(value, bool):
            raise ValueError(name)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(name)
        return number
    if name in {"state_dir", "config", "vapid_key"}:
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
                raise SettingsError(
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


def _checked(name: str, value: Any, source: str) -> Any:
    """`value` coerced for setting `name`, or SettingsError naming `source`."""
    try:
        coerced = _coerce(name, value)
    except SettingsError as exc:
        raise SettingsError(f"{source}: {exc}") from None
    except (ValueError, TypeError):
        expected = EXPECTED.get(name, "valid")
        raise SettingsError(f"{source}: {name} must be {expected}, got {value!r}") from None
    if name == "port" and not 1 <= coerced <= 65535:
        raise SettingsError(f"{source}: port must be 1-65535, got {coerced}")
    numeric = INTEGERS | FLOATS | AUTO_OR_INTEGERS
    if name in numeric and name != "port" and coerced is not None and coerced <= 0:
        raise SettingsError(f"{source}: {name} must be above 0, got {coerced}")
    if name == "target_queue_delay_s" and coerced > MAX_TARGET_QUEUE_DELAY_S:
        raise SettingsError(
            f"{source}: target_queue_delay_s is a delay in seconds, at most "
            f"{MAX_TARGET_QUEUE_DELAY_S:g}, got {coerced}"
        )
    if name == "log_format" and coerced not in LOG_FORMATS:
        raise SettingsError(f"{source}: log_format must be json or text, got {coerced!r}")
    if name == "log_level" and coerced.upper() not in LOG_LEVELS:
        raise SettingsError(f"{source}: log_level must be one of {', '.join(LOG_LEVELS)}")
    return coerced


def _read_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"service", "rate_limits", "waves"}
    if unknown:
        raise SettingsError(f"{path}: unknown sections {sorted(unknown)}")
    return data


def _check_waves(path: str, waves: Any) -> tuple[Mapping[str, Any], ...]:
    """Every [[waves]] entry parsed now, so a bad wave stops start-up before anything runs."""
    from queue_service.errors import ApiError
    from queue_service.waves import parse_wave

    if not isinstance(waves, list):
        raise SettingsError(f"{path}: waves must be [[waves]] tables")
    for number, definition in enumerate(waves, 1):
        data = dict(definition) if isinstance(definition, Mapping) else {}
        wave_id = str(data.pop("id", ""))
        try:
            parse_wave(wave_id, data)
        except ApiError as exc:
            name = f"wave {wave_id!r}" if wave_id else f"wave number {number} (no id)"
            raise SettingsError(f"{path}: [[waves]] {name}: {exc.message}") from None
    return tuple(waves)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """File < environment < overrides (the command-line flags that were given). Raises
    SettingsError, one line naming the file, variable or flag, for anything unusable."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, Any] = {}

    config_path = overrides.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    file_data: dict[str, Any] = {}
    if config_path:
        file_data = _read_config(str(config_path))
        service = file_data.get("service", {})
        if not isinstance(service, Mapping):
            raise SettingsError(f"{config_path}: [service] must be a table")
        for key, value in service.items():
            if key not in _SCALAR_FIELDS or key in _NOT_FROM_ENV:
                raise SettingsError(f"{config_path}: unknown setting [service].{key}")
            values[key] = _checked(key, value, f"{config_path}: [service].{key}")
        values["config"] = Path(config_path)

    for name in _SCALAR_FIELDS:
        variable = ENV_PREFIX + name.upper()
        env_value = environ.get(variable)
        if name not in _NOT_FROM_ENV and env_value not in (None, ""):
            values[name] = _checked(name, env_value, variable)
    for name, value in overrides.items():
        values[name] = _checked(name, value, f"--{name.replace('_', '-')}")

    try:
        rules = RateLimitRules.from_mapping(file_data.get("rate_limits", {}))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SettingsError(f"{config_path}: [rate_limits]: {exc}") from None
    switch = environ.get(ENV_PREFIX + "RATE_LIMITS")
    if switch is not None and switch.strip().lower() in {"off", "0", "false", "no"}:
        rules = replace(rules, enabled=False)
    values["rate_limits"] = rules
    if "waves" in file_data:
        values["waves"] = _check_waves(str(config_path), file_data["waves"])
    return Settings(**values)
