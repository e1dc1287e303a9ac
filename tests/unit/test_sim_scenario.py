"""Scenario files: the bundled ones load with the documented numbers; bad files get clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from simulator.scenario import (
    SCENARIO_DIR,
    ScenarioError,
    bundled_scenarios,
    load_scenario,
    scenario_from_dict,
)


def _laptop_dict() -> dict[str, Any]:
    return tomllib.loads((SCENARIO_DIR / "laptop.toml").read_text("utf-8"))


def test_bundled_scenarios_load() -> None:
    assert {"prakerja", "laptop"} <= set(bundled_scenarios())
    for name in bundled_scenarios():
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.population_size > 0


# Kartu Prakerja wave 1 (11-16 Apr 2020), as reported [O]
WAVE_1_REGISTERED = 5_965_048
WAVE_1_REGISTERED_AFTER_21_H = 1_432_133
WAVE_1_PEAK_MINUTE = 80_000
WAVE_1_QUOTA = 200_000  # raised from 164,000


def test_prakerja_reproduces_wave_1_as_reported() -> None:
    """Each reported figure within 10%, from the scenario's own arrival process."""
    s = load_scenario("prakerja")
    process = s.arrival_process()
    opens = s.clock.opens_at_s
    whole_wave = process.expected_count(-1e9, 1e9)
    first_21_h = process.expected_count(-1e9, opens + 21 * 3600)
    peak_minute = max(
        process.expected_count(opens + 60 * k, opens + 60 * (k + 1)) for k in range(180)
    )
    assert whole_wave == pytest.approx(WAVE_1_REGISTERED, rel=0.10)
    assert first_21_h == pytest.approx(WAVE_1_REGISTERED_AFTER_21_H, rel=0.10)
    assert peak_minute == pytest.approx(WAVE_1_PEAK_MINUTE, rel=0.10)
    assert s.wave.quota == WAVE_1_QUOTA
    # the wave took registrations for 5 days, opening at 12:00 WIB (t = 0 is 11:00)
    assert s.clock.closes_at_s - opens == 120 * 3600
    assert s.clock.start_hour + opens / 3600 == 12.0


def test_prakerja_scenario_carries_the_wave_facts() -> None:
    s = load_scenario("prakerja")
    assert s.wave.max_active == 22_500  # 75% of a 30,000 origin (Cloudflare's rule)
    assert s.origin.capacity == 30_000
    assert s.wave.prequeue_s == 3600
    assert s.behaviour.persistence_first == 0.95 and s.behaviour.persistence_decay == 0.85
    assert s.behaviour.balk_scale_s == 6 * 3600
    assert s.behaviour.return_later_p == 0.7
    assert s.population_mix.patience_median_s == 45 * 60
    assert s.population_mix.patience_sigma == 1.0
    assert len(s.arrivals.diurnal) == 24


def test_every_number_in_a_bundled_scenario_says_where_it_comes_from() -> None:
    """Each line that sets a number names its source ([O], [R], [D]) or says [E], on the
    line or in the comment of its table; and no scenario names a path outside the
    repository."""
    for path in SCENARIO_DIR.glob("*.toml"):
        text = path.read_text("utf-8")
        assert "/work/" not in text and "/home/" not in text and "shared/" not in text, path
    text = (SCENARIO_DIR / "prakerja.toml").read_text("utf-8")
    table_note = False
    for line in text.splitlines():
        code, _, comment = line.partition("#")
        if code.strip().startswith("["):
            table_note = any(tag in comment for tag in ("[O]", "[D]", "[E]", "[R]"))
            continue
        if "=" not in code or not any(ch.isdigit() for ch in code.split("=", 1)[1]):
            continue
        key = code.split("=", 1)[0].strip()
        if key in ("seed", "reference_date", "name", "description", "id"):
            continue
        sourced = any(tag in comment for tag in ("[O]", "[D]", "[E]", "[R]"))
        assert sourced or table_note, f"prakerja.toml: {line.strip()!r} says no source"


def test_laptop_scenario_is_small_and_overloads_its_origin_when_unprotected() -> None:
    s = load_scenario("laptop")
    assert 1_000 <= s.population_size <= 5_000
    assert s.clock.opens_at_s == 10.0
    assert 90.0 <= s.clock.duration_s <= 120.0
    process = s.arrival_process()
    peak_arrivals_per_s = max(process.rate(s.clock.opens_at_s + k / 10) for k in range(50))
    flow_s = sum(s.origin.service_ms.values()) / 1000.0
    # Little's law: requests wanting to be in flight at the peak, before any retry.
    assert peak_arrivals_per_s * flow_s > 2 * s.origin.capacity
    # Through the queue the admitted load fits.
    assert s.wave.admit_rate * flow_s < s.origin.capacity


def test_a_scenario_file_can_be_given_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        (SCENARIO_DIR / "laptop.toml").read_text("utf-8").replace("size = 2_000", "size = 77")
    )
    assert load_scenario(path).population_size == 77
    assert load_scenario(str(path)).source == str(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["wave"].update(admit_rat=5), r"\[wave\] has unknown keys \['admit_rat'\]"),
        (lambda d: d["wave"].update(admit_rate="fast"), r"\[wave\] admit_rate must be a number"),
        (lambda d: d["wave"].update(admit_rate=0), r"wave.admit_rate must be > 0"),
        (lambda d: d["wave"].update(max_active=1.5), r"\[wave\] max_active must be an integer"),
        (lambda d: d["arrivals"].update(p_pre=0.5), r"add up to 1"),
        (lambda d: d["population"].pop("size"), r"\[population\] size must be a positive integer"),
        (lambda d: d["population"].update(bot_share=2), r"bot_share must be in \[0, 1\]"),
        (lambda d: d.update(colour="blue"), r"unknown top-level keys \['colour'\]"),
        (lambda d: d["clock"].update(closes_at_s=5.0), r"closes_at_s must be after"),
        (lambda d: d["origin"].update(capacity=0), r"origin.capacity must be >= 1"),
        (lambda d: d.update(population={"size": 10, "network": {"5g": 1.0}}), r"unknown classes"),
    ],
)
def test_bad_scenarios_are_refused_with_a_clear_message(edit: Any, message: str) -> None:
    data = _laptop_dict()
    edit(data)
    with pytest.raises(ScenarioError, match=r"^scenario my\.toml: .*" + message):
        scenario_from_dict(data, "my.toml")


def test_unknown_scenario_names_and_broken_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"unknown scenario 'nope'; bundled: .*laptop"):
        load_scenario("nope")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "missing.toml")
