"""Wave configuration: validation of what an SRE writes (config file or admin API) and its
Redis encoding. The state machine itself runs in Lua (`lua/_lib.lua: wave_state`) so that every
process sees the same state at the same moment."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson

from queue_service.autopilot import AutopilotConfig, parse_autopilot
from queue_service.errors import BadRequest, Conflict
from queue_service.identity import ID_KINDS
from queue_service.keys import WAVE_ID
from queue_service.notify_config import NotifyConfig, parse_notify
from queue_service.ratelimit import RateLimitRules

MIN_GRACE_S = 5.0
"""Least abandon_after_s: far above the delay of buffered poll deadlines (seen_buffer.py)."""
MAX_POW_BITS = 28
MAX_HAVE_READY = 10
MAX_HAVE_READY_CHARS = 120
REQUIRED_FIELDS = ("opens_at", "closes_at", "admit_rate", "origin_url")
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})
"""A JWK's private parts: a wave names public keys only."""


@dataclass(frozen=True)
class WaveConfig:
    id: str
    opens_at: float
    """Unix seconds."""
    closes_at: float
    admit_rate: float
    """Admissions per second; fractional allowed."""
    origin_url: str
    admit_burst: float = 0.0
    """Most admissions at once after idle time; 0 = max(1, admit_rate)."""
    max_active: int = 0
    """Admitted sessions alive at once; 0 = no limit."""
    session_ttl_s: float = 900.0
    quota: int = 0
    """Total admissions in the wave; 0 = no limit."""
    prequeue_s: float = 0.0
    abandon_after_s: float = 120.0
    """Grace after a missed poll deadline: a waiting ticket whose holder has not polled by the
    deadline they were given (poll interval + this) is skipped by admission."""
    title: str = ""
    rate_limits: Mapping[str, Any] = field(default_factory=dict)
    """Per-wave override of the deployment's rate-limit rules."""
    expected_session_s: float = 0.0
    """Expected length of an admitted session (the ETA's prior when max_active binds);
    0 = half of session_ttl_s until sessions are measured."""
    id_kind: str = "generic"
    """How registrant ids are normalised and checked (identity.py): generic or nik."""
    verified_joins: bool = False
    """Join only with an enqueue token signed by the registration site (enqueue.py)."""
    enqueue_jwks_url: str = ""
    """Where the registration site publishes its enqueue-token keys (JWKS)."""
    enqueue_keys: tuple[Mapping[str, Any], ...] = ()
    """Or the public keys themselves, as JWKs."""
    enqueue_issuer: str = ""
    """If set, an enqueue token's iss must be this."""
    pow_bits: int = 0
    """Proof-of-work a join must carry (leading zero bits of SHA-256); 0 = off (pow.py)."""
    one_time_tokens: bool = False
    """Admission tokens work from one browser only: origin guards bind them on first use."""
    autopilot: AutopilotConfig = field(default_factory=AutopilotConfig)
    """Admission that follows the origin's health (autopilot.py); off unless configured."""
    operator_name: str = ""
    """Who runs the wave, shown at the top of the waiting page (e.g. the programme's office)."""
    official_url: str = ""
    """The operator's official site, shown on the waiting page so people can check that the
    queue they are in is the real one (phishing copies of a queue appear on opening day)."""
    have_ready: tuple[str, ...] = ()
    """What to have ready while waiting (e.g. NIK, KK, a photo of the KTP, the phone for the
    OTP), listed on the waiting page as written."""
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    """Call-backs: leave the line and be called back, carry-over (notify_config.py)."""

    @property
    def session_estimate_s(self) -> float:
        return self.expected_session_s or self.session_ttl_s / 2

    @property
    def effective_burst(self) -> float:
        return self.admit_burst if self.admit_burst > 0 else max(1.0, self.admit_rate)

    def limits(self, base: RateLimitRules) -> RateLimitRules:
        return RateLimitRules.from_mapping(self.rate_limits, base) if self.rate_limits else base

    def to_redis(self) -> dict[str, str]:
        return {
            "id": self.id,
            "opens_at": str(int(self.opens_at * 1000)),
            "closes_at": str(int(self.closes_at * 1000)),
            "admit_rate": repr(self.admit_rate),
            "admit_burst": repr(self.effective_burst),
            "admit_burst_configured": repr(self.admit_burst),
            "max_active": str(self.max_active),
            "session_ttl_ms": str(int(self.session_ttl_s * 1000)),
            "quota": str(self.quota),
            "prequeue_ms": str(int(self.prequeue_s * 1000)),
            "abandon_ms": str(int(self.abandon_after_s * 1000)),
            "origin_url": self.origin_url,
            "title": self.title,
            "rate_limits": _encode_limits(self.rate_limits),
            "expected_session_s": repr(self.expected_session_s),
            "id_kind": self.id_kind,
            "verified_joins": "1" if self.verified_joins else "0",
            "enqueue_jwks_url": self.enqueue_jwks_url,
            "enqueue_keys": orjson.dumps(list(self.enqueue_keys)).decode(),
            "enqueue_issuer": self.enqueue_issuer,
            "pow_bits": str(self.pow_bits),
            "one_time_tokens": "1" if self.one_time_tokens else "0",
            "autopilot": orjson.dumps(self.autopilot.public_dict()).decode(),
            "operator_name": self.operator_name,
            "official_url": self.official_url,
            "have_ready": orjson.dumps(list(self.have_ready)).decode(),
            "notify": orjson.dumps(self.notify.public_dict()).decode(),
            **self.notify.to_redis(),
        }

    @classmethod
    def from_redis(cls, raw: Mapping[bytes, bytes]) -> WaveConfig:
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=data["id"],
            opens_at=int(data["opens_at"]) / 1000,
            closes_at=int(data["closes_at"]) / 1000,
            admit_rate=float(data["admit_rate"]),
            admit_burst=float(data.get("admit_burst_configured", "0")),
            max_active=int(data["max_active"]),
            session_ttl_s=int(data["session_ttl_ms"]) / 1000,
            quota=int(data["quota"]),
            prequeue_s=int(data["prequeue_ms"]) / 1000,
            abandon_after_s=int(data["abandon_ms"]) / 1000,
            origin_url=data["origin_url"],
            title=data.get("title", ""),
            rate_limits=orjson.loads(data.get("rate_limits") or "{}"),
            expected_session_s=float(data.get("expected_session_s", "0")),
            id_kind=data.get("id_kind", "generic"),
            verified_joins=data.get("verified_joins") == "1",
            enqueue_jwks_url=data.get("enqueue_jwks_url", ""),
            enqueue_keys=tuple(orjson.loads(data.get("enqueue_keys") or "[]")),
            enqueue_issuer=data.get("enqueue_issuer", ""),
            pow_bits=int(data.get("pow_bits", "0")),
            one_time_tokens=data.get("one_time_tokens") == "1",
            autopilot=_stored_autopilot(data.get("autopilot")),
            operator_name=data.get("operator_name", ""),
            official_url=data.get("official_url", ""),
            have_ready=tuple(orjson.loads(data.get("have_ready") or "[]")),
            notify=_stored_notify(data.get("notify")),
        )

    def public_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rate_limits"] = dict(self.rate_limits)
        out["opens_at"] = iso_utc(self.opens_at)
        out["closes_at"] = iso_utc(self.closes_at)
        out["admit_burst"] = self.effective_burst
        out["enqueue_keys"] = [dict(k) for k in self.enqueue_keys]
        out["autopilot"] = self.autopilot.public_dict()
        out["have_ready"] = list(self.have_ready)
        out["notify"] = self.notify.public_dict()
        return out


def _stored_autopilot(raw: str | None) -> AutopilotConfig:
    """The autopilot as stored (validated when it was put; absent on older waves)."""
    if not raw:
        return AutopilotConfig()
    return parse_autopilot(orjson.loads(raw))


def _stored_notify(raw: str | None) -> NotifyConfig:
    """The call-backs as stored (validated when they were put; absent on older waves)."""
    return parse_notify(orjson.loads(raw)) if raw else NotifyConfig()


def _encode_limits(limits: Mapping[str, Any]) -> str:
    return orjson.dumps(dict(limits)).decode()


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


_FIELD_NAMES = {f.name for f in fields(WaveConfig)}


def parse_time(value: Any, name: str) -> float:
    """ISO 8601 with an offset, or Unix seconds."""
    if isinstance(value, bool):
        raise BadRequest(f"{name} must be a time", code="invalid_wave")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise BadRequest(f"{name} needs a UTC offset", code="invalid_wave")
        ts = value.timestamp()
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise BadRequest(
                f"{name} must be ISO 8601 with an offset or Unix seconds", code="invalid_wave"
            ) from None
        if parsed.tzinfo is None:
            raise BadRequest(f"{name} needs a UTC offset (e.g. +07:00)", code="invalid_wave")
        ts = parsed.timestamp()
    else:
        raise BadRequest(f"{name} must be a time", code="invalid_wave")
    if not math.isfinite(ts) or not 0 < ts < 32_503_680_000:
        raise BadRequest(f"{name} is out of range", code="invalid_wave")
    return ts


def _number(data: Mapping[str, Any], name: str, default: float, *, minimum: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name} must be a number", code="invalid_wave")
    number = float(value)
    if not math.isfinite(number) or number < minimum or number > 1e12:
        raise BadRequest(f"{name} must be a number >= {minimum:g}", code="invalid_wave")
    return number


def _burst(data: Mapping[str, Any]) -> float:
    """0 means one second's worth; otherwise at least one whole admission (a bucket that holds
    less than one token could never admit anyone)."""
    burst = _number(data, "admit_burst", 0, minimum=0)
    if 0 < burst < 1:
        raise BadRequest("admit_burst must be 0 (automatic) or at least 1", code="invalid_wave")
    return burst


def _integer(data: Mapping[str, Any], name: str, default: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**12:
        raise BadRequest(f"{name} must be a whole number >= 0", code="invalid_wave")
    return int(value)


def validate_wave_id(wave_id: str) -> str:
    if not WAVE_ID.fullmatch(wave_id):
        raise BadRequest(
            "wave id must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter "
            "or digit",
            code="invalid_wave_id",
        )
    return wave_id


def parse_wave(
    wave_id: str, data: Mapping[str, Any], current: WaveConfig | None = None
) -> WaveConfig:
    """Validate a full or partial definition; fields not given keep their `current` value."""
    validate_wave_id(wave_id)
    if not isinstance(data, Mapping):
        raise BadRequest("wave definition must be a JSON object", code="invalid_wave")
    unknown = set(data) - _FIELD_NAMES
    if unknown:
        raise BadRequest(f"unknown wave fields: {', '.join(sorted(unknown))}", code="invalid_wave")
    if "id" in data and data["id"] != wave_id:
        raise BadRequest("id in the body differs from the wave in the path", code="invalid_wave")
    merged: dict[str, Any] = asdict(current) if current else {}
    merged.update(data)
    autopilot = parse_autopilot(data.get("autopilot"), current.autopilot if current else None)
    notify = parse_notify(data.get("notify"), current.notify if current else None)
    missing = [name for name in REQUIRED_FIELDS if name not in merged]
    if missing:
        raise BadRequest(
            f"a new wave needs {_and(list(REQUIRED_FIELDS))}; missing: {_and(missing)}",
            code="invalid_wave",
        )
    opens_at = parse_time(merged["opens_at"], "opens_at")
    closes_at = parse_time(merged["closes_at"], "closes_at")
    if closes_at <= opens_at:
        raise BadRequest("closes_at must be after opens_at", code="invalid_wave")
    admit_rate = _number(merged, "admit_rate", 0, minimum=0)
    if admit_rate <= 0:
        raise BadRequest(
            "admit_rate must be above 0 (pause the wave to stop admissions)", code="invalid_wave"
        )
    origin_url = merged["origin_url"]
    if not isinstance(origin_url, str) or urlsplit(origin_url).scheme not in ("http", "https"):
        raise BadRequest("origin_url must be an http(s) URL", code="invalid_wave")
    if not urlsplit(origin_url).netloc or len(origin_url) > 2048:
        raise BadRequest("origin_url must be an absolute http(s) URL", code="invalid_wave")
    title = merged.get("title", "")
    if not isinstance(title, str) or len(title) > 200:
        raise BadRequest("title must be text of at most 200 characters", code="invalid_wave")
    rate_limits = merged.get("rate_limits") or {}
    try:
        RateLimitRules.from_mapping(rate_limits)
    except (ValueError, TypeError, AttributeError) as exc:
        raise BadRequest(f"rate_limits: {exc}", code="invalid_wave") from None
    session_ttl_s = _number(merged, "session_ttl_s", 900, minimum=1)
    abandon_after_s = _number(merged, "abandon_after_s", 120, minimum=MIN_GRACE_S)
    id_kind = merged.get("id_kind", "generic")
    if id_kind not in ID_KINDS:
        raise BadRequest(f"id_kind must be one of {', '.join(ID_KINDS)}", code="invalid_wave")
    pow_bits = _integer(merged, "pow_bits", 0)
    if pow_bits > MAX_POW_BITS:
        raise BadRequest(f"pow_bits must be at most {MAX_POW_BITS}", code="invalid_wave")
    verified_joins = _flag(merged, "verified_joins")
    jwks_url = merged.get("enqueue_jwks_url", "")
    if not isinstance(jwks_url, str) or (jwks_url and not _is_http_url(jwks_url)):
        raise BadRequest("enqueue_jwks_url must be an http(s) URL", code="invalid_wave")
    enqueue_keys = _enqueue_keys(merged.get("enqueue_keys") or ())
    if verified_joins and not (jwks_url or enqueue_keys):
        raise BadRequest(
            "verified_joins needs enqueue_jwks_url or enqueue_keys (the registration site's "
            "public keys)",
            code="invalid_wave",
        )
    if (jwks_url or enqueue_keys) and not verified_joins:
        # Both kinds of join in one wave would let a place claimed with a bare id (by anyone
        # who knows it) be handed to the person who later proves that id: refused.
        raise BadRequest(
            "enqueue_jwks_url and enqueue_keys are only used with verified_joins = true: a "
            "wave takes either bare registrant ids or enqueue tokens, never both",
            code="invalid_wave",
        )
    issuer = merged.get("enqueue_issuer", "")
    if not isinstance(issuer, str) or len(issuer) > 200:
        raise BadRequest("enqueue_issuer must be text", code="invalid_wave")
    operator_name = merged.get("operator_name", "")
    if not isinstance(operator_name, str) or len(operator_name) > 200:
        raise BadRequest(
            "operator_name must be text of at most 200 characters", code="invalid_wave"
        )
    official_url = merged.get("official_url", "")
    if not isinstance(official_url, str) or (official_url and not _is_http_url(official_url)):
        raise BadRequest("official_url must be an absolute http(s) URL", code="invalid_wave")
    return WaveConfig(
        id=wave_id,
        opens_at=opens_at,
        closes_at=closes_at,
        admit_rate=admit_rate,
        admit_burst=_burst(merged),
        max_active=_integer(merged, "max_active", 0),
        session_ttl_s=session_ttl_s,
        quota=_integer(merged, "quota", 0),
        prequeue_s=_number(merged, "prequeue_s", 0, minimum=0),
        abandon_after_s=abandon_after_s,
        origin_url=origin_url,
        title=title,
        rate_limits=dict(rate_limits),
        expected_session_s=_number(merged, "expected_session_s", 0, minimum=0),
        id_kind=id_kind,
        verified_joins=verified_joins,
        enqueue_jwks_url=jwks_url,
        enqueue_keys=enqueue_keys,
        enqueue_issuer=issuer,
        pow_bits=pow_bits,
        one_time_tokens=_flag(merged, "one_time_tokens"),
        autopilot=autopilot,
        operator_name=operator_name,
        official_url=official_url,
        have_ready=_have_ready(merged.get("have_ready") or ()),
        notify=notify,
    )


def _and(names: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _have_ready(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > MAX_HAVE_READY:
        raise BadRequest(
            f"have_ready must be a list of at most {MAX_HAVE_READY} texts", code="invalid_wave"
        )
    for item in value:
        if not isinstance(item, str) or not 0 < len(item) <= MAX_HAVE_READY_CHARS:
            raise BadRequest(
                f"each have_ready item must be text of 1-{MAX_HAVE_READY_CHARS} characters",
                code="invalid_wave",
            )
    return tuple(value)


def check_opening_change(
    current: WaveConfig | None, new: WaveConfig, opened: bool, now: float
) -> None:
    """A wave opens once. Its pre-queue is shuffled and frozen at the opening, and from then on
    it admits; a later `opens_at` cannot undo that, so moving the opening of a wave that has
    opened into the future is refused (it would show `open` with a future opening time while
    it keeps admitting). To hold admission, pause the wave; to rehearse or run another
    opening, create a new wave."""
    if current is None or not opened or new.opens_at == current.opens_at or new.opens_at <= now:
        return
    raise Conflict(
        f"wave {new.id} opened at {iso_utc(current.opens_at)}; a wave opens once, so its "
        "opening cannot be moved later. To hold admission, pause it (gelombang wave pause "
        f"{new.id}); for a new opening, create a new wave.",
        code="wave_already_opened",
    )


def _flag(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false", code="invalid_wave")
    return value


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and len(url) <= 2048


def _enqueue_keys(value: Any) -> tuple[Mapping[str, Any], ...]:
    """Public JWKs of the registration site; checked here so a bad key is refused at PUT."""
    if not isinstance(value, list | tuple):
        raise BadRequest("enqueue_keys must be a list of JWKs", code="invalid_wave")
    keys = []
    for jwk in value:
        try:
            keys.append(check_public_jwk(jwk))
        except ValueError as exc:
            raise BadRequest(f"enqueue_keys: {exc}", code="invalid_wave") from None
    return tuple(keys)


def check_public_jwk(jwk: Any) -> dict[str, Any]:
    """A JWK as a wave may name it: a public key of a supported type, no private parts."""
    if not isinstance(jwk, Mapping):
        raise ValueError("each key must be a JWK object")
    if PRIVATE_MEMBERS & set(jwk):
        raise ValueError("a key holds private parts: give the public key only")
    try:
        jwt.PyJWK(dict(jwk))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a usable public JWK ({exc})") from None
    return dict(jwk)
