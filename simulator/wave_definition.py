"""The wave a scenario describes, as the queue takes it: one definition for every place that
creates a wave from a scenario (the live driver and `gelombang simulate`, the demo's config
file, the Locust set-up, the planner's `gelombang wave put` command, the driver benchmark).

    wave_definition(scenario, opens_at=..., closes_at=..., origin_url=...)

gives the body of `PUT /admin/v1/waves/{wave}` (the fields of a `[[waves]]` table of the config
file, `as_toml` renders one): the scenario's `[wave]` table (and its `[wave.autopilot]` when
on), with the times and the
registration site only the caller knows. A caller that runs the wave at another `admit_rate`
gets the scenario's burst in proportion (`WaveParams.burst_at`, as the offline model runs it);
any other field can be changed by name (`max_active=0`, `title=...`, `rate_limits=...`).
A scenario with call-backs (`[callbacks]`) gives the wave its `notify` object: the channels
its people pick, `lead_s`, `return_window_s`, and the SMS/WhatsApp gateway `webhook_url`
(the live driver's own receiver; `EXAMPLE_GATEWAY` where there is none yet, a config file to
fill in).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

from simulator.callback_params import notify_object
from simulator.scenario import Scenario

ENQUEUE_JWKS_PATH = "/.well-known/enqueue-jwks.json"
"""Where the sample origin publishes the keys of the enqueue tokens it signs."""
EXAMPLE_GATEWAY = "https://sms-gateway.example.go.id/gelombang"
"""The SMS/WhatsApp gateway of a wave rendered for a config file (docs/callbacks.md)."""


def wave_definition(
    scenario: Scenario,
    *,
    opens_at: float | str,
    closes_at: float | str,
    origin_url: str,
    admit_rate: float | None = None,
    enqueue_jwks_url: str | None = None,
    webhook_url: str = EXAMPLE_GATEWAY,
    **changes: Any,
) -> dict[str, Any]:
    """`opens_at`, `closes_at`: Unix seconds or ISO 8601 with an offset; `origin_url`: where
        admitted registrants go; `enqueue_jwks_url`: the registration site's enqueue keys (a wave
        with verified joins; default: the sample origin's, next to `origin_url`); `webhook_url`:
    where the wave's SMS and WhatsApp messages go, if its scenario has call-backs."""
    wave = scenario.wave
    rate = wave.admit_rate if admit_rate is None else admit_rate
    definition: dict[str, Any] = {
        "opens_at": opens_at,
        "closes_at": closes_at,
        "admit_rate": rate,
        "admit_burst": wave.burst_at(rate),
        "max_active": wave.max_active,
        "session_ttl_s": wave.session_ttl_s,
        "quota": wave.quota,
        "prequeue_s": wave.prequeue_s,
        "abandon_after_s": wave.abandon_after_s,
        "expected_session_s": wave.expected_session_s,
        "origin_url": origin_url,
        "verified_joins": wave.verified_joins,
    }
    if scenario.autopilot.enabled:  # `[wave.autopilot]`: the wave's field, as it is
        definition["autopilot"] = scenario.autopilot.public_dict()
    if wave.verified_joins:  # the registration site signs registrants in and vouches for them
        definition["enqueue_jwks_url"] = enqueue_jwks_url or urljoin(origin_url, ENQUEUE_JWKS_PATH)
    if scenario.callbacks.enabled:
        definition["notify"] = dict(notify_object(scenario.callbacks, webhook_url))
    definition.update(changes)
    return definition


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def as_toml(wave_id: str, definition: Mapping[str, Any]) -> str:
    """One `[[waves]]` table of the config file (`gelombang serve --config`)."""
    lines = ["[[waves]]", f"id = {_toml_value(wave_id)}"]
    lines += [f"{name} = {_toml_value(value)}" for name, value in definition.items()]
    return "\n".join(lines) + "\n"
