"""Arrivals: the thinning generator produces counts that match the integral of lambda(t)."""

from __future__ import annotations

import itertools
import math
import time

import pytest

from simulator.arrivals import PRAKERJA_DIURNAL, ArrivalParams, ArrivalProcess
from simulator.scenario import load_scenario

# Chi-square 0.999 quantiles for the degrees of freedom used below (fixed seeds: the tests are
# deterministic; the bound says how far off a correct generator could plausibly be).
CHI2_999 = {59: 99.6, 71: 114.0}


def _chi_square(process: ArrivalProcess, times: list[float], edges: list[float]) -> float:
    observed = [0] * (len(edges) - 1)
    k = 0
    for t in times:
        while t >= edges[k + 1]:
            k += 1
        observed[k] += 1
    statistic = 0.0
    for i, count in enumerate(observed):
        expected = process.expected_count(edges[i], edges[i + 1])
        assert expected > 5, "bins must be wide enough for the chi-square approximation"
        statistic += (count - expected) ** 2 / expected
    return statistic


def test_laptop_arrivals_match_the_intensity_per_bin() -> None:
    scenario = load_scenario("laptop")
    process = ArrivalProcess(
        scenario.arrivals, 20_000, scenario.clock.opens_at_s, scenario.clock.closes_at_s
    )
    times = list(process.times(seed=2026))
    assert abs(len(times) - 20_000) < 4 * math.sqrt(20_000)
    # 60 bins of 1.5 s from the start of the build-up to the close.
    edges = [process.start + 1.5 * k for k in range(61)]
    edges[-1] = process.tc
    assert _chi_square(process, times, edges) < CHI2_999[59]


def test_prakerja_shape_arrivals_match_the_intensity_with_diurnal_tail() -> None:
    params = ArrivalParams(diurnal=PRAKERJA_DIURNAL)
    process = ArrivalProcess(params, 60_000, 3600.0, 3600.0 + 72 * 3600.0, start_hour=11.0)
    times = list(process.times(seed=7))
    # Bins: the hour before opening, then 71 hours (the tail crosses every diurnal step).
    edges = [0.0] + [3600.0 * (k + 1) for k in range(72)]
    edges[-1] = process.tc
    assert _chi_square(process, times, edges) < CHI2_999[71]


def test_the_opening_spike_is_where_the_scenario_puts_it() -> None:
    process = load_scenario("prakerja").arrival_process()
    per_minute_at_peak = process.expected_count(3600.0, 3660.0)
    assert 72_000 < per_minute_at_peak < 88_000  # the reported ~80,000 in one minute
    assert process.expected_count(-1e9, 1e9) == pytest.approx(5_965_048)
    assert process.rate(3599.0) < process.rate(3600.0)  # the spike starts at opening
    assert process.rate(process.tc) == 0.0


def test_expected_count_is_the_integral_of_the_rate() -> None:
    process = load_scenario("laptop").arrival_process()
    a, b, steps = 5.0, 40.0, 35_000
    width = (b - a) / steps
    riemann = sum(process.rate(a + (k + 0.5) * width) for k in range(steps)) * width
    assert riemann == pytest.approx(process.expected_count(a, b), rel=1e-4)


def test_arrivals_are_lazy_increasing_and_deterministic() -> None:
    process = load_scenario("prakerja").arrival_process()  # 5 million expected
    started = time.perf_counter()
    first = list(itertools.islice(process.times(seed=1), 10_000))
    assert time.perf_counter() - started < 2.0
    assert first == sorted(first)
    assert first == list(itertools.islice(process.times(seed=1), 10_000))
    assert first != list(itertools.islice(process.times(seed=2), 10_000))
    assert list(process.times(seed=1, limit=5)) == first[:5]


def test_arrival_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="add up to 1"):
        ArrivalParams(p_pre=0.5)
    with pytest.raises(ValueError, match="diurnal"):
        ArrivalParams(diurnal=(1.0, 2.0))
    with pytest.raises(ValueError, match="closes_at_s"):
        ArrivalProcess(ArrivalParams(), 100, 10.0, 5.0)
