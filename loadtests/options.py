"""The load tests' own command-line options (also read from the environment, for compose) and
the settings object built from them once per process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from locust import events

from loadtests.stepping import BreakLimits
from loadtests.targets import DEFAULT_HOST, DEFAULT_ORIGIN_URL, check_public_url, check_target
from simulator.scenario import Scenario, load_scenario


def add_options(parser: Any) -> None:
    group = parser  # locust's own parser: it knows env_var, is_secret, include_in_web_ui
    group.add_argument(
        "--wave", env_var="LOCUST_WAVE", default="loadtest", help="wave id to rehearse"
    )
    group.add_argument(
        "--origin-url",
        env_var="LOCUST_ORIGIN_URL",
        default=DEFAULT_ORIGIN_URL,
        help="the sample origin admitted registrants register at (never taken from redirects)",
    )
    group.add_argument(
        "--admin-token",
        env_var="GELOMBANG_ADMIN_TOKEN",
        default="",
        is_secret=True,
        help="queue admin token: (re)creates the wave, runs the admin user, checks admissions",
    )
    group.add_argument(
        "--webhook-secret",
        env_var="GELOMBANG_WEBHOOK_SECRET",
        default="",
        is_secret=True,
        help="call-backs: the queue's webhook secret (base64), which the rehearsal's "
        "SMS/WhatsApp gateway checks signatures with (a scenario with [callbacks] needs it)",
    )
    group.add_argument(
        "--gateway-host",
        default="127.0.0.1",
        help="call-backs: address the rehearsal's gateway listens on and the wave's "
        "webhook_url names (another than loopback only for a queue on another machine)",
    )
    group.add_argument(
        "--gateway-port",
        type=int,
        default=0,
        help="call-backs: the gateway's port (0 = a free one)",
    )
    group.add_argument(
        "--gateway-url",
        default="",
        help="call-backs: the URL the queue reaches the gateway at, when not the listening "
        "address (NAT, a proxy); by default that address, or this machine's name when "
        "--gateway-host is 0.0.0.0 or ::",
    )
    group.add_argument(
        "--scenario",
        env_var="LOCUST_SCENARIO",
        default="laptop",
        help="simulator scenario (bundled name or .toml path): population, behaviour, wave",
    )
    group.add_argument(
        "--population-seed",
        type=int,
        default=-1,
        help="seed of the synthetic registrants (-1 = the scenario's); change it for a new crowd",
    )
    group.add_argument(
        "--keep-wave",
        action="store_true",
        env_var="LOCUST_KEEP_WAVE",
        help="do not (re)create the wave at start; it must exist and be open",
    )
    group.add_argument(
        "--admit-rate", type=float, default=0.0, help="wave admit_rate (0 = the scenario's)"
    )
    group.add_argument(
        "--max-active", type=int, default=-1, help="wave max_active (-1 = the scenario's)"
    )
    group.add_argument(
        "--wave-rate-limits",
        choices=["on", "off"],
        default="on",
        help="the wave's rate limits (off only to show that the bot check catches it)",
    )
    group.add_argument(
        "--admin-change-after",
        type=float,
        default=5.0,
        help="seconds into the run when the admin user changes admit_rate",
    )
    group.add_argument(
        "--admin-new-rate",
        type=float,
        default=0.0,
        help="admit_rate the admin user sets (0 = double the starting rate)",
    )
    group.add_argument(
        "--poll-cap-s",
        type=float,
        default=5.0,
        help="longest wait between a registrant's polls (compresses long waits in rehearsals)",
    )
    group.add_argument(
        "--check-bot-limited-min",
        type=float,
        default=0.5,
        help="verdict: least share of bot requests the queue must rate-limit",
    )
    group.add_argument(
        "--check-admission-tolerance",
        type=float,
        default=0.25,
        help="verdict: allowed relative gap between achieved and configured admit_rate",
    )
    group.add_argument(
        "--check-allow-skip",
        default="",
        help="verdict: checks (comma-separated) that may go unmeasured without failing it",
    )
    group.add_argument(
        "--check-sample-s",
        type=float,
        default=1.0,
        help="how often the master samples the wave and the origin's metrics",
    )
    group.add_argument(
        "--verdict-file",
        env_var="LOCUST_VERDICT_FILE",
        default="",
        help="write the checks' verdict as JSON to this file",
    )
    group.add_argument(
        "--peak-users",
        type=int,
        default=60,
        help="wave-opening shape: users at the arrival peak",
    )
    group.add_argument(
        "--shape-duration",
        type=float,
        default=90.0,
        help="wave-opening shape: seconds the compressed opening lasts",
    )
    group.add_argument(
        "--step-users", type=int, default=20, help="stress shape: users added per step"
    )
    group.add_argument(
        "--step-seconds", type=float, default=20.0, help="stress shape: seconds per step"
    )
    group.add_argument(
        "--step-max-users", type=int, default=400, help="stress shape: users of the last step"
    )
    group.add_argument(
        "--step-max-fail-ratio",
        type=float,
        default=0.01,
        help="stress shape: a step with more failed requests than this is broken",
    )
    group.add_argument(
        "--step-max-p95-ms",
        type=float,
        default=500.0,
        help="stress shape: a step with a slower p95 than this is broken",
    )
    group.add_argument(
        "--stop-at-break",
        action="store_true",
        help="stress shape: stop at the first broken step instead of climbing on",
    )


events.init_command_line_parser.add_listener(add_options)


@dataclass(frozen=True)
class LoadSettings:
    host: str
    origin_url: str
    wave: str
    admin_token: str
    webhook_secret: str
    gateway_host: str
    gateway_port: int
    gateway_url: str
    scenario: Scenario
    population_seed: int
    keep_wave: bool
    admit_rate: float
    max_active: int
    wave_rate_limits: bool
    admin_change_after_s: float
    admin_new_rate: float
    poll_cap_s: float
    check_bot_limited_min: float
    check_admission_tolerance: float
    check_allow_skip: frozenset[str]
    check_sample_s: float
    verdict_file: str
    peak_users: int
    shape_duration_s: float
    step_users: int
    step_seconds: float
    step_max_users: int
    step_limits: BreakLimits
    stop_at_break: bool


def settings_from(options: Any, host: str | None) -> LoadSettings:
    """Validated settings; `host` is the environment's host (set only by `--host`/LOCUST_HOST)."""
    scenario = _scenario(options.scenario)
    wave = scenario.wave
    admit_rate = options.admit_rate if options.admit_rate > 0 else wave.admit_rate
    return LoadSettings(
        host=check_target(host or DEFAULT_HOST, explicit=bool(host), what="queue host"),
        origin_url=check_target(
            options.origin_url,
            explicit=options.origin_url != DEFAULT_ORIGIN_URL,
            what="origin URL",
        ),
        wave=options.wave,
        admin_token=options.admin_token or "",
        webhook_secret=options.webhook_secret or "",
        gateway_host=options.gateway_host,
        gateway_port=options.gateway_port,
        gateway_url=check_public_url(options.gateway_url, what="gateway URL"),
        scenario=scenario,
        population_seed=scenario.seed if options.population_seed < 0 else options.population_seed,
        keep_wave=bool(options.keep_wave),
        admit_rate=admit_rate,
        max_active=options.max_active if options.max_active >= 0 else wave.max_active,
        wave_rate_limits=options.wave_rate_limits == "on",
        admin_change_after_s=options.admin_change_after,
        admin_new_rate=options.admin_new_rate if options.admin_new_rate > 0 else 2 * admit_rate,
        poll_cap_s=options.poll_cap_s,
        check_bot_limited_min=options.check_bot_limited_min,
        check_admission_tolerance=options.check_admission_tolerance,
        check_allow_skip=frozenset(
            name.strip() for name in str(options.check_allow_skip or "").split(",") if name.strip()
        ),
        check_sample_s=options.check_sample_s,
        verdict_file=options.verdict_file or "",
        peak_users=options.peak_users,
        shape_duration_s=options.shape_duration,
        step_users=options.step_users,
        step_seconds=options.step_seconds,
        step_max_users=options.step_max_users,
        step_limits=BreakLimits(options.step_max_fail_ratio, options.step_max_p95_ms),
        stop_at_break=bool(options.stop_at_break),
    )


@cache
def _scenario(name_or_path: str) -> Scenario:
    return load_scenario(name_or_path)
