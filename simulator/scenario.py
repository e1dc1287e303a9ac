"""Wave scenarios: every parameter of a simulated wave, named, loaded from a TOML file.

Interface:

- `load_scenario(name_or_path) -> Scenario`: a bundled name (`prakerja`, `laptop`, the files in
  `simulator/scenarios/`) or a path to a `.toml` file. Raises `ScenarioError` with a message
  naming the file, the table and the key when anything is missing, unknown or out of range.
- `scenario_from_dict(data, source="<dict>")`: the same from an already parsed mapping.
- `bundled_scenarios() -> list[str]`.
- `Scenario`: frozen; `population_mix`, `clock`, `wave`, `arrivals`, `behaviour`, `origin`,
  `callbacks` (who leaves the line to be called back: `simulator.callback_params`).
  `scenario.arrival_process()` builds the `ArrivalProcess` for its clock;
  `scenario.population()` builds the lazy `Population`.

Times are seconds since the start of the run (t = 0). The wave opens at `clock.opens_at_s` and
closes at `clock.closes_at_s`; the pre-queue starts `wave.prequeue_s` before opening.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from queue_service.autopilot import AutopilotConfig, parse_autopilot
from queue_service.errors import BadRequest
from simulator.arrivals import ArrivalParams, ArrivalProcess
from simulator.behaviour import BehaviourParams
from simulator.callback_params import CallbackParams
from simulator.registrants import NETWORK_CLASSES, Population, PopulationMix

# Bundled scenarios live next to this module (package data; a plain path works for editable
# and wheel installs alike).
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class ClockParams:
    opens_at_s: float = 3600.0  # wave opening (T0), seconds after the start of the run
    closes_at_s: float = 3600.0 + 72 * 3600.0  # wave close (Tc)
    duration_s: float = 3600.0 + 72 * 3600.0  # how long a run lasts (>= closes_at_s is usual)
    start_hour: float = 11.0  # local (WIB) hour of day at t = 0, for the diurnal weights

    def __post_init__(self) -> None:
        if self.opens_at_s < 0:
            raise ValueError("clock.opens_at_s must be >= 0")
        if self.closes_at_s <= self.opens_at_s:
            raise ValueError("clock.closes_at_s must be after clock.opens_at_s")
        if self.duration_s <= self.opens_at_s:
            raise ValueError("clock.duration_s must be after clock.opens_at_s")
        if not 0 <= self.start_hour < 24:
            raise ValueError("clock.start_hour must be in [0, 24)")


@dataclass(frozen=True)
class WaveParams:
    """The queue's wave configuration (the same fields as a `[[waves]]` table)."""

    id: str = "prakerja-1"
    quota: int = 600_000  # registrations the wave accepts (0 = no limit)
    admit_rate: float = 41.7  # admissions per second
    admit_burst: float = 0.0  # token-bucket burst; 0 = max(1, admit_rate)
    max_active: int = 22_500  # admitted sessions not yet completed (0 = no limit)
    session_ttl_s: float = 3600.0  # an admitted session not completed frees its slot after this
    prequeue_s: float = 3600.0  # arrivals this long before opening are shuffled at opening
    abandon_after_s: float = 300.0  # grace after a missed poll deadline, then skipped
    expected_session_s: float = 0.0  # the ETA prior's slot hold when max_active binds; 0 = TTL/2
    verified_joins: bool = False  # registrants sign in at the origin and join with its token

    @property
    def session_estimate_s(self) -> float:
        """What the service assumes (waves.WaveConfig.session_estimate_s)."""
        return self.expected_session_s or self.session_ttl_s / 2

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("wave.id must not be empty")
        if self.admit_rate <= 0:
            raise ValueError("wave.admit_rate must be > 0")
        for name in ("quota", "max_active"):
            if getattr(self, name) < 0:
                raise ValueError(f"wave.{name} must be >= 0")
        for name in ("admit_burst", "prequeue_s", "expected_session_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"wave.{name} must be >= 0")
        for name in ("session_ttl_s", "abandon_after_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"wave.{name} must be > 0")

    @property
    def burst(self) -> float:
        return self.admit_burst if self.admit_burst > 0 else max(1.0, self.admit_rate)

    def burst_at(self, admit_rate: float) -> float:
        """The burst of this wave run at another `admit_rate`: the scenario's, in proportion
        (the planner tries other rates; a rehearsal may set its own)."""
        if admit_rate == self.admit_rate:
            return self.burst
        return max(1.0, self.burst * admit_rate / self.admit_rate)


@dataclass(frozen=True)
class OriginParams:
    """The registration server behind the waiting room."""

    capacity: int = 30_000  # concurrent sessions (model) / concurrent requests (live origin)
    timeout_s: float = 30.0  # a request not answered in this long is a failure
    # service time of each registration step at low load, milliseconds (live origin)
    service_ms: dict[str, float] = field(
        default_factory=lambda: {
            "account": 120.0,
            "ktp": 250.0,
            "otp_send": 80.0,
            "otp_verify": 60.0,
            "join": 100.0,
        }
    )
    # whole-session time from admission to completion (model): lognormal per flow [E]
    new_account_share: float = 0.4  # full flow; the rest are returning accounts
    session_new_median_s: float = 25 * 60.0
    session_returning_median_s: float = 3 * 60.0
    session_sigma: float = 0.5
    requests_per_session: float = 50.0  # origin API calls per registration [E]
    # (seconds after the start of the run, capacity) steps: the origin loses (or regains)
    # workers mid-run, as `gelombang origin --capacity-schedule` does (`[origin]
    # capacity_schedule = [[150, 12]]`); the model's `CapacityOrigin` follows it
    capacity_schedule: tuple[tuple[float, int], ...] = ()

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("origin.capacity must be >= 1")
        if self.timeout_s <= 0:
            raise ValueError("origin.timeout_s must be > 0")
        if not 0 <= self.new_account_share <= 1:
            raise ValueError("origin.new_account_share must be in [0, 1]")
        for name in ("session_new_median_s", "session_returning_median_s", "requests_per_session"):
            if getattr(self, name) <= 0:
                raise ValueError(f"origin.{name} must be > 0")
        if self.session_sigma < 0:
            raise ValueError("origin.session_sigma must be >= 0")
        bad = [k for k, v in self.service_ms.items() if not isinstance(v, int | float) or v <= 0]
        if bad:
            raise ValueError(f"origin.service_ms values must be > 0 ({', '.join(bad)})")
        for at_s, capacity in self.capacity_schedule:
            if at_s < 0 or capacity < 1:
                raise ValueError("origin.capacity_schedule: [seconds >= 0, capacity >= 1] steps")

    def capacity_at(self, t: float) -> int:
        """The origin's workers at `t` (the last scheduled step at or before it)."""
        capacity = self.capacity
        for at_s, scheduled in sorted(self.capacity_schedule):
            if at_s <= t:
                capacity = scheduled
        return capacity


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    seed: int
    population_size: int  # expected first attempts (N)
    population_mix: PopulationMix
    clock: ClockParams
    wave: WaveParams
    arrivals: ArrivalParams
    behaviour: BehaviourParams
    origin: OriginParams
    source: str = "<dict>"  # file it came from
    callbacks: CallbackParams = field(default_factory=CallbackParams)
    """Who leaves the line to be called back (`simulator.callback_params`); off by default."""
    autopilot: AutopilotConfig = field(default_factory=AutopilotConfig)
    """`[wave.autopilot]`: the wave's autopilot (off unless the table says so)."""

    def arrival_process(self) -> ArrivalProcess:
        return ArrivalProcess(
            self.arrivals,
            self.population_size,
            self.clock.opens_at_s,
            self.clock.closes_at_s,
            start_hour=self.clock.start_hour,
        )

    def population(self, seed: int | None = None) -> Population:
        return Population(
            self.seed if seed is None else seed, self.population_size, self.population_mix
        )


# ----------------------------------------------------------------------------- loading

_SECTIONS = ("population", "clock", "wave", "arrivals", "behaviour", "origin", "callbacks")


def _type_name(value: Any) -> str:
    return type(value).__name__


def _coerce(section: str, key: str, default: Any, value: Any) -> Any:
    """Check `value` against the type of the field's default; convert lists to tuples."""
    where = f"[{section}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ScenarioError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{where} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ScenarioError(f"{where} must be a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in value
        ):
            raise ScenarioError(f"{where} must be a list of numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ScenarioError(f"{where} must be a table, got {_type_name(value)}")
        return dict(value)
    if isinstance(default, dt.date):
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            raise ScenarioError(f"{where} must be a date (YYYY-MM-DD), got {value!r}")
        return value
    return value


def _build(cls: type, section: str, table: dict[str, Any], skip: tuple[str, ...] = ()) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ScenarioError(f"[{section}] has unknown keys {unknown}; known keys: {sorted(fields)}")
    defaults = cls()
    kwargs = {
        key: _coerce(section, key, getattr(defaults, key), value) for key, value in table.items()
    }
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None


def scenario_from_dict(data: dict[str, Any], source: str = "<dict>") -> Scenario:
    try:
        return _scenario_from_dict(data, source)
    except ScenarioError as exc:
        raise ScenarioError(f"scenario {source}: {exc}") from None


def _scenario_from_dict(data: dict[str, Any], source: str) -> Scenario:
    known_top = {"name", "description", "seed", *_SECTIONS}
    unknown = sorted(set(data) - known_top)
    if unknown:
        raise ScenarioError(f"unknown top-level keys {unknown}; known: {sorted(known_top)}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError("`name` (a non-empty string) is required")
    seed = data.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ScenarioError(f"`seed` must be an integer, got {seed!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError("`description` must be a string")
    tables: dict[str, dict[str, Any]] = {}
    for section in _SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ScenarioError(f"[{section}] must be a table")
        tables[section] = dict(table)

    population = tables["population"]
    size = population.pop("size", None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ScenarioError(f"[population] size must be a positive integer, got {size!r}")
    network = population.pop("network", None)
    if network is not None:
        if not isinstance(network, dict) or not network:
            raise ScenarioError("[population.network] must be a table of class = share")
        unknown_classes = sorted(set(network) - set(NETWORK_CLASSES))
        if unknown_classes:
            raise ScenarioError(
                f"[population.network] unknown classes {unknown_classes}; "
                f"known: {sorted(NETWORK_CLASSES)}"
            )
        shares = []
        for key, share in network.items():
            if isinstance(share, bool) or not isinstance(share, int | float) or share < 0:
                raise ScenarioError(f"[population.network] {key} must be a number >= 0")
            shares.append((key, float(share)))
    mix = _build(PopulationMix, "population", population, skip=("network_weights",))
    if network is not None:
        try:
            mix = dataclasses.replace(mix, network_weights=tuple(shares))
        except ValueError as exc:
            raise ScenarioError(str(exc)) from None

    clock = _build(ClockParams, "clock", tables["clock"])
    autopilot = _autopilot(tables["wave"].pop("autopilot", None))
    wave = _build(WaveParams, "wave", tables["wave"])
    arrivals = _build(ArrivalParams, "arrivals", tables["arrivals"])
    behaviour = _build(BehaviourParams, "behaviour", tables["behaviour"])
    schedule = _capacity_schedule(tables["origin"].pop("capacity_schedule", []))
    origin = _build(OriginParams, "origin", tables["origin"])
    callbacks = _build(CallbackParams, "callbacks", tables["callbacks"])
    if callbacks.carry_over_to and not wave.verified_joins:
        raise ScenarioError(
            "[callbacks] carry_over_to: only verified holders are carried (the same person in "
            "the next wave): set [wave] verified_joins = true"
        )
    try:
        origin = dataclasses.replace(origin, capacity_schedule=schedule)
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    return Scenario(
        name=name,
        description=description,
        seed=seed,
        population_size=size,
        population_mix=mix,
        clock=clock,
        wave=wave,
        arrivals=arrivals,
        behaviour=behaviour,
        origin=origin,
        source=source,
        callbacks=callbacks,
        autopilot=autopilot,
    )


OFFLINE_PROMETHEUS = "http://prometheus.invalid"
"""Offline the model's origin is its own Prometheus: a scenario need not name one."""


def _autopilot(table: Any) -> AutopilotConfig:
    """`[wave.autopilot]`, checked as `PUT /admin/v1/waves` checks the wave's field."""
    if table is None:
        return AutopilotConfig()
    if not isinstance(table, dict):
        raise ScenarioError("[wave.autopilot] must be a table")
    try:
        return parse_autopilot({"prometheus_url": OFFLINE_PROMETHEUS, **table})
    except BadRequest as exc:
        raise ScenarioError(f"[wave.autopilot] {exc.message}") from None


def _capacity_schedule(value: Any) -> tuple[tuple[float, int], ...]:
    where = "[origin] capacity_schedule"
    if not isinstance(value, list):
        raise ScenarioError(f"{where} must be a list of [seconds, capacity] pairs")
    steps = []
    for step in value:
        if (
            not isinstance(step, list)
            or len(step) != 2
            or isinstance(step[0], bool)
            or not isinstance(step[0], int | float)
            or isinstance(step[1], bool)
            or not isinstance(step[1], int)
        ):
            raise ScenarioError(f"{where}: each step is [seconds, whole capacity], got {step!r}")
        steps.append((float(step[0]), step[1]))
    return tuple(sorted(steps))


def bundled_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    text: str
    source: str
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ScenarioError(f"scenario file {path} does not exist")
        text, source = path.read_text("utf-8"), str(path)
    else:
        name = str(name_or_path)
        resource = SCENARIO_DIR / f"{name}.toml"
        if not resource.is_file():
            raise ScenarioError(
                f"unknown scenario {name!r}; bundled: {', '.join(bundled_scenarios())} "
                "(or give a path to a .toml file)"
            )
        text, source = resource.read_text("utf-8"), f"{name}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {source}: not valid TOML: {exc}") from None
    return scenario_from_dict(data, source)
