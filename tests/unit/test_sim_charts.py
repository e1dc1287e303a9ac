"""The SVG chart kit: axes on nice steps with readable labels, legends that fit."""

from __future__ import annotations

import math
import random
import re

import pytest

from simulator.charts import (
    PAD_L,
    PAD_R,
    WIDTH,
    Axis,
    line_chart,
    nice_step,
    tick_label,
    time_unit,
)
from simulator.report import render_html
from simulator.stats import summarise
from tests.helpers.known_runs import known_run


def _is_nice(step: float) -> bool:
    mantissa = step / 10.0 ** math.floor(math.log10(step) + 1e-9)
    return any(math.isclose(mantissa, m) for m in (1.0, 2.0, 5.0))


def test_nice_step_is_the_smallest_1_2_5_step_that_fits() -> None:
    assert nice_step(90) == 20
    assert nice_step(112.5) == 50
    assert nice_step(100) == 20
    assert nice_step(1) == 0.2
    assert nice_step(961) == 200
    assert nice_step(0) == 1.0
    rng = random.Random(4)
    for _ in range(500):
        span = 10 ** rng.uniform(-3, 7)
        step = nice_step(span)
        assert _is_nice(step), (span, step)
        assert span / step <= 5 * (1 + 1e-9), (span, step)
        smaller = [s for s in (step / 2, step / 2.5) if _is_nice(s)]  # the next nice step down
        assert all(span / s > 5 for s in smaller), (span, step)


def test_tick_labels_show_integers_as_integers_and_only_needed_digits() -> None:
    assert [tick_label(v, 0.2) for v in (0.0, 0.2, 0.4, 1.0)] == ["0", "0.2", "0.4", "1"]
    assert [tick_label(v, 50.0) for v in (0.0, 50.0, 100.0, 150.0)] == ["0", "50", "100", "150"]
    assert tick_label(1000.0, 200.0) == "1,000"
    assert tick_label(2500.0, 500.0) == "2,500"
    assert tick_label(5000.0, 1000.0) == "5k"
    assert tick_label(2_500_000.0, 500_000.0) == "2.5M"
    assert tick_label(0.05, 0.05) == "0.05"


@pytest.mark.parametrize(
    ("span_s", "unit"), [(90, "s"), (300, "s"), (301, "min"), (5 * 3600, "min"), (72 * 3600, "h")]
)
def test_time_axes_count_in_the_unit_that_reads_best(span_s: float, unit: str) -> None:
    assert time_unit(span_s)[0] == unit


def test_axes_end_on_a_tick_for_values_and_where_the_data_ends_for_time() -> None:
    values = Axis(0.0, 112.5, "number", extend=True)
    assert values.hi == 150 and values.ticks() == [0, 50, 100, 150]
    hours = Axis(0.0, 72 * 3600, "time", extend=False)
    assert hours.hi == 72 * 3600
    assert [hours.label(t) for t in hours.ticks()] == ["0 h", "20 h", "40 h", "60 h"]
    shares = Axis(0.0, 0.28, "percent", extend=True)
    assert [shares.label(t) for t in shares.ticks()] == ["0 %", "10 %", "20 %", "30 %"]


def test_every_tick_on_the_report_page_is_a_round_number() -> None:
    runs = [known_run("direct", 3, 45), known_run("queued", 0, 15)]
    page = render_html(runs, [summarise(r) for r in runs])
    labels = re.findall(r'class="tick">([^<]*)</text>', page)
    assert len(labels) > 50
    number = re.compile(r"-?\d{1,3}(,\d{3})*(\.\d*[1-9])?(k|M)?( s| min| h| %)?")
    for label in labels:
        assert number.fullmatch(label), label


def test_a_long_legend_wraps_instead_of_overlapping() -> None:
    label = "origin 5xx + timeouts/s, without Gelombang"
    lines = [(f"{label} {k}", [0.0, 1.0], [0.0, 1.0], "#000", False) for k in range(3)]
    svg = line_chart("long", "Long legend", lines, "per second")
    entries = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" class="legend">', svg)
    assert len(entries) == 3
    rows = sorted({float(y) for _, y in entries})
    assert len(rows) == 2
    for x, _ in entries:
        assert PAD_L <= float(x) < WIDTH - PAD_R
