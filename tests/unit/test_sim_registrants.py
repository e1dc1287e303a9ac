"""Synthetic registrants: determinism, NIK/KK structure, the validation the origin uses, and the
shared behaviour decisions."""

from __future__ import annotations

import datetime as dt
import re
import statistics
import time

import pytest

from queue_service.protocol import HolderState
from simulator import behaviour
from simulator.registrants import (
    NETWORK_CLASSES,
    InvalidNik,
    Population,
    PopulationMix,
    kk_is_valid,
    nik_is_valid,
    parse_nik,
    region_table,
)
from tests.helpers.paths import REPO

TODAY = dt.date(2026, 4, 11)


def test_the_same_seed_gives_the_same_registrants_in_any_order() -> None:
    a, b = Population(42, 1000), Population(42, 1000)
    forward = [a[i] for i in range(200)]
    backward = [b[i] for i in reversed(range(200))][::-1]
    assert forward == backward
    assert Population(43, 1000)[5] != a[5]
    assert len({r.registrant_id for r in forward}) == 200


def test_a_population_of_millions_is_generated_lazily() -> None:
    population = Population(1, 50_000_000)
    started = time.perf_counter()
    last = population[49_999_999]
    assert time.perf_counter() - started < 0.5
    assert last.index == 49_999_999
    assert len(population) == 50_000_000
    with pytest.raises(IndexError):
        population[50_000_000]


def test_nik_has_the_kemendagri_structure() -> None:
    regions = {r.code for r in region_table().regions}
    for r in Population(7, 2000):
        assert re.fullmatch(r"\d{16}", r.nik)
        assert r.nik[:6] == r.district_code and r.district_code in regions
        day = int(r.nik[6:8])
        assert (day > 40) == (r.sex == "F")
        assert day - (40 if r.sex == "F" else 0) == r.birth_date.day
        assert r.nik[8:10] == f"{r.birth_date.month:02d}"
        assert r.nik[10:12] == f"{r.birth_date.year % 100:02d}"
        assert r.nik[12:] != "0000"
        info = parse_nik(r.nik, TODAY)
        assert (info.sex, info.birth_date, info.region_code) == (
            r.sex,
            r.birth_date,
            r.district_code,
        )
        assert kk_is_valid(r.kk) and r.kk[:6] == r.district_code


def test_region_table_covers_all_38_provinces_and_stays_small() -> None:
    table = region_table()
    assert len(table.province_codes) == 38
    assert {
        "11",
        "31",
        "32",
        "35",
        "51",
        "91",
        "92",
        "93",
        "94",
        "95",
        "96",
    } <= table.province_codes
    data = REPO / "simulator" / "data" / "regions.csv"
    assert data.stat().st_size < 200_000


@pytest.mark.parametrize(
    ("nik", "reason"),
    [
        ("327601201007849", "16 digits"),
        ("32760120100784944", "16 digits"),
        ("32760120100784a4", "16 digits"),
        ("9976012010078494", "province"),
        ("3200012010078494", "01"),
        ("3276013210078494", "date"),  # day 32
        ("3276017210078494", "date"),  # woman, day 72 - 40 = 32
        ("3276012013078494", "date"),  # month 13
        ("3276013002078494", "date"),  # 30 February
        ("3276012010070000", "serial"),
    ],
)
def test_malformed_nik_is_refused_with_a_reason(nik: str, reason: str) -> None:
    assert not nik_is_valid(nik, TODAY)
    with pytest.raises(InvalidNik, match=reason):
        parse_nik(nik, TODAY)


def test_nik_birth_year_is_read_in_the_right_century() -> None:
    assert parse_nik("3276016105990001", TODAY).birth_date == dt.date(1999, 5, 21)
    assert parse_nik("3276012105050001", TODAY).birth_date == dt.date(2005, 5, 21)
    assert parse_nik("3276016105990001", TODAY).sex == "F"


def test_contact_details_look_indonesian() -> None:
    for r in Population(3, 300):
        assert re.fullmatch(r"\+628\d{9,11}", r.phone)
        assert re.fullmatch(r"[a-z.]+\d+@[a-z.]+", r.email)
        assert r.name and r.name[0].isupper()
        assert r.network in NETWORK_CLASSES.values()


def test_population_mix_is_respected() -> None:
    mix = PopulationMix(bot_share=0.05, joki_share=0.02, joki_accounts_per_operator=20)
    people = list(Population(11, 5000, mix))
    joki = [r for r in people if r.is_joki]
    scripted = [r for r in people if r.is_bot and not r.is_joki]
    assert 60 <= len(joki) <= 145  # 100 expected
    assert 180 <= len(scripted) <= 320  # 250 expected
    assert all(r.is_bot and r.retry_habit == "full_jitter" for r in joki)
    operators = Population(11, 5000, mix).joki_operators
    assert operators == 5
    assert {r.operator_id for r in joki} <= set(range(operators))
    humans = [r for r in people if not r.is_bot]
    assert 0.25 < sum(r.manual_refresher for r in humans) / len(humans) < 0.35
    median_patience = statistics.median(r.patience_s for r in humans)
    assert 0.8 * 2700 < median_patience < 1.2 * 2700
    adults = [r for r in people if r.age >= 18]
    assert len(adults) / len(people) > 0.98
    assert all(r.age <= 64 for r in people)


def test_households_share_a_family_card() -> None:
    population = Population(5, 4000, PopulationMix(shared_kk_share=0.5))
    shared = sum(population[2 * k].kk == population[2 * k + 1].kk for k in range(2000))
    assert 850 < shared < 1150


def test_mix_rejects_impossible_shares() -> None:
    with pytest.raises(ValueError, match="bot_share"):
        PopulationMix(bot_share=1.5)
    with pytest.raises(ValueError, match="network"):
        PopulationMix(network_weights=(("5g", 1.0),))


# ----------------------------------------------------------------------------- behaviour


def test_humans_follow_poll_after_and_bots_ignore_it() -> None:
    rng = behaviour.PersonDraws(1)
    people = list(Population(2, 3000))
    human = next(r for r in people if not r.is_bot and not r.manual_refresher)
    manual = next(r for r in people if r.manual_refresher)
    bot = next(r for r in people if r.is_bot)
    human_delays = [behaviour.poll_delay_s(rng, human, 20_000) for _ in range(500)]
    assert all(16.0 <= d <= 24.0 for d in human_delays)
    assert all(10.0 <= behaviour.poll_delay_s(rng, manual, 20_000) <= 60.0 for _ in range(200))
    assert all(0.2 <= behaviour.poll_delay_s(rng, bot, 20_000) <= 1.0 for _ in range(200))


def test_human_persistence_decays_and_retries_mix_f5_and_walking_away() -> None:
    assert behaviour.persistence(1) == pytest.approx(0.95)
    assert behaviour.persistence(3) == pytest.approx(0.95 * 0.85**2)
    human = next(r for r in Population(2, 500) if not r.is_bot)
    rng = behaviour.PersonDraws(3)
    first = [behaviour.retry_delay_s(rng, human, 1) for _ in range(4000)]
    gave_up = sum(d is None for d in first) / len(first)
    assert 0.03 < gave_up < 0.07  # 1 - 0.95
    delays = [d for d in first if d is not None]
    f5 = sum(1.0 <= d <= 5.0 for d in delays) / len(delays)
    assert 0.5 < f5 < 0.6  # 50% F5 plus the part of the lognormal under 5 s
    assert 20.0 < statistics.median(d for d in delays if d > 5.0) < 45.0
    # the waiting page honours Retry-After
    honoured = [behaviour.retry_delay_s(rng, human, 1, retry_after_s=90.0) for _ in range(200)]
    assert all(d is None or d >= 90.0 for d in honoured)


def test_scripted_clients_use_full_jitter_and_ignore_retry_after() -> None:
    bot = next(r for r in Population(2, 3000) if r.is_bot)
    rng = behaviour.PersonDraws(4)
    for attempt in range(1, 12):
        window = min(60.0, 2.0**attempt)
        delays = [
            behaviour.retry_delay_s(rng, bot, attempt, retry_after_s=300.0) for _ in range(50)
        ]
        assert all(d is not None and 0.0 <= d <= window for d in delays)


def test_balking_follows_the_eta() -> None:
    assert behaviour.balk_probability(0) == 0.0
    assert behaviour.balk_probability(6 * 3600) == pytest.approx(1 - 2.718281828**-1)
    rng = behaviour.PersonDraws(5)
    people = Population(2, 3000)
    human = next(r for r in people if not r.is_bot)
    bot = next(r for r in people if r.is_bot)
    share = (
        sum(behaviour.balks(rng, human, HolderState.WAITING, 3 * 3600.0) for _ in range(20_000))
        / 20_000
    )
    assert share == pytest.approx(1 - 2.718281828**-0.5, abs=0.015)
    assert not behaviour.balks(rng, human, HolderState.WAITING, None)
    # the pre-queue's countdown is not a wait to balk at, and scripts never balk
    assert not any(behaviour.balks(rng, human, HolderState.PREQUEUE, 1e9) for _ in range(100))
    assert not any(behaviour.balks(rng, bot, HolderState.WAITING, 1e9) for _ in range(100))


def test_bots_never_renege_and_patience_starts_at_the_opening() -> None:
    people = Population(2, 3000)
    bot = next(r for r in people if r.is_bot)
    human = next(r for r in people if not r.is_bot)
    assert not behaviour.reneges(bot, 1e12)
    assert behaviour.reneges(human, human.patience_s)
    assert not behaviour.reneges(human, human.patience_s * 0.99)
    assert behaviour.patience_from(5.0, 10.0) == 10.0
    assert behaviour.patience_from(15.0, 10.0) == 15.0


def test_behaviour_params_are_validated() -> None:
    with pytest.raises(ValueError, match="persistence_first"):
        behaviour.BehaviourParams(persistence_first=1.2)
    with pytest.raises(ValueError, match="bot_poll_min_s"):
        behaviour.BehaviourParams(bot_poll_min_s=2.0, bot_poll_max_s=1.0)
