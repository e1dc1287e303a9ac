"""The report: numbers computed correctly from known inputs, and the HTML page as a real
browser (headless Chromium, driven by Playwright) renders it."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import orjson
import pytest

from simulator.records import RegistrantOutcome, RunMeta, RunRecord, TimeSeries
from simulator.report import (
    fairness,
    kendall_tau_b,
    percentile,
    render_html,
    summarise,
    write_report,
)

from pages import launch_chromium, open_tab

# ----------------------------------------------------------------------------- statistics


def test_percentiles_use_nearest_rank() -> None:
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile(values, 0.0) == 1
    assert percentile([7.0, 3.0, 5.0], 0.5) == 5.0
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError):
        percentile(values, 1.5)


def _brute_force_tau_b(xs: list[float], ys: list[float]) -> float | None:
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(xs)), 2):
        dx, dy = xs[i] - xs[j], ys[i] - ys[j]
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
        elif dx == 0 and dy != 0:
            ties_x += 1
        elif dy == 0 and dx != 0:
            ties_y += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return None if denominator == 0 else (concordant - discordant) / denominator


def test_kendall_tau_b_for_known_permutations() -> None:
    assert kendall_tau_b([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one swapped neighbour pair: 5 concordant, 1 discordant of 6 -> 4/6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # 1 2 3 / 2 1 3 with a tie in x: (x: 1,1,2) -> hand value
    # pairs: (1,2)(1,1): tie in x; (1,2)-(2,3): concordant; (1,1)-(2,3): concordant
    # tau_b = 2 / sqrt((3 - 1) * 3)
    assert kendall_tau_b([1, 1, 2], [2, 1, 3]) == pytest.approx(2 / math.sqrt(6))
    assert kendall_tau_b([1], [1]) is None
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None


def test_kendall_tau_b_matches_the_definition_with_ties() -> None:
    rng = random.Random(9)
    for _ in range(50):
        n = rng.randint(2, 40)
        xs = [float(rng.randint(0, 6)) for _ in range(n)]
        ys = [float(rng.randint(0, 6)) for _ in range(n)]
        expected = _brute_force_tau_b(xs, ys)
        got = kendall_tau_b(xs, ys)
        assert (expected is None and got is None) or got == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_b_is_fast_for_large_samples() -> None:
    rng = random.Random(1)
    xs = list(range(200_000))
    ys = [x + rng.random() * 50 for x in xs]
    tau = kendall_tau_b(xs, ys)
    assert tau is not None and 0.99 < tau < 1.0


# ----------------------------------------------------------------------------- a known run


def _known_run(mode: str, errors_per_s: int, peak: int) -> RunRecord:
    """40 s run, opening at t=10. Ten pre-queue registrants (joined 0..9) admitted in a
    shuffled order at 10..19; then 100 registrants joining at 10 + k*0.25, admitted FIFO, each
    waiting exactly k+1 seconds... except in direct mode, where the order is reversed."""
    series = TimeSeries.empty(40.0)
    outcomes = []
    shuffled = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]
    for rank, k in enumerate(shuffled):
        outcomes.append(
            RegistrantOutcome(
                index=k,
                is_bot=False,
                arrival_t=float(k),
                joined_t=float(k),
                prequeue=True,
                admitted_t=10.0 + rank * 0.1,
                completed_t=12.0 + rank * 0.1,
            )
        )
    for k in range(100):
        joined = 10.0 + k * 0.25
        wait = float(k + 1)
        admitted = joined + wait if mode == "queued" else 200.0 - joined
        outcomes.append(
            RegistrantOutcome(
                index=10 + k,
                is_bot=False,
                arrival_t=joined,
                joined_t=joined,
                position_at_join=k + 1,
                eta_at_join_s=wait + 2.0,
                admitted_t=admitted,
                completed_t=admitted + 1.0,
            )
        )
        series.add("arrivals", joined)
    for t in range(40):
        series.set("origin_capacity", t, 20)
        series.peak("origin_inflight", t, peak if 10 <= t < 20 else 3)
        series.add("origin_errors", t, errors_per_s if t >= 10 else 0)
        series.set("queue_length", t, max(0, 50 - abs(t - 15) * 4))
        series.set("admit_rate_target", t, 4.0 if mode == "queued" else 0.0)
        series.add("admissions", t, 4 if 10 <= t < 38 else 0)
    meta = RunMeta(
        mode=mode,
        scenario="known",
        seed=1,
        source="live",
        population=110,
        duration_s=40.0,
        opens_at_s=10.0,
        prequeue_s=10.0,
        admit_rate=4.0 if mode == "queued" else None,
        origin_capacity=20,
    )
    return RunRecord.build(meta, series, outcomes)


def test_summary_numbers_come_from_the_outcomes() -> None:
    queued = summarise(_known_run("queued", errors_per_s=0, peak=15))
    post_waits = list(range(1, 101))
    pre_waits = [10.0 + r * 0.1 - k for r, k in enumerate([3, 7, 0, 9, 1, 5, 8, 2, 6, 4])]
    every = sorted([float(w) for w in post_waits] + pre_waits)
    assert queued["wait_s"]["p50"] == pytest.approx(percentile(every, 0.5))
    assert queued["wait_s"]["p95"] == pytest.approx(every[math.ceil(0.95 * 110) - 1])
    assert queued["wait_s"]["p99"] == pytest.approx(every[math.ceil(0.99 * 110) - 1])
    assert queued["completed"] == 110
    assert queued["peak_origin_inflight"] == 15 and queued["origin_capacity"] == 20
    assert queued["peak_over_capacity"] == 0.75
    assert queued["eta_error_s"]["median"] == -2.0  # every estimate 2 s too long
    direct = summarise(_known_run("direct", errors_per_s=3, peak=45))
    assert direct["origin_errors"] == 90  # 3/s for 30 s
    assert direct["peak_over_capacity"] == 2.25


def test_fairness_sees_fifo_the_prequeue_block_and_reversals() -> None:
    queued = fairness(_known_run("queued", errors_per_s=0, peak=15))
    assert queued["post_open_admitted"] == 100
    assert queued["tau_b"] == 1.0
    assert queued["overtaken_pair_share"] == 0.0
    assert queued["prequeue_admitted_first"] is True
    shuffled = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]
    assert queued["prequeue_tau_b"] == pytest.approx(
        kendall_tau_b(shuffled, list(range(10)))  # join time k, admission rank
    )
    direct = fairness(_known_run("direct", errors_per_s=3, peak=45))
    assert direct["tau_b"] == -1.0
    assert direct["overtaken_pair_share"] == 1.0
    assert direct["max_rank_displacement"] == 99
    assert direct["prequeue_admitted_first"] is True


def test_report_files_are_written(tmp_path: Path) -> None:
    runs = [_known_run("direct", 3, 45), _known_run("queued", 0, 15)]
    json_path, html_path = write_report(runs, tmp_path)
    data = orjson.loads(json_path.read_bytes())
    assert [r["mode"] for r in data["runs"]] == ["direct", "queued"]
    assert data["runs"][1]["fairness"]["tau_b"] == 1.0
    page = html_path.read_text("utf-8")
    # Self-contained: no script, no external resource of any kind.
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "<link" not in page and "@import" not in page and "url(" not in page


# ----------------------------------------------------------------------------- in a browser


@pytest.mark.slow
async def test_the_report_renders_in_a_real_browser(tmp_path: Path) -> None:
    runs = [_known_run("direct", 3, 45), _known_run("queued", 0, 15)]
    _, html_path = write_report(runs, tmp_path)
    async with launch_chromium() as browser:
        tab = await open_tab(browser, width=1200, height=900, mobile=False)
        page = tab.page
        await page.goto(html_path.as_uri())
        headings = await page.evaluate(
            "[...document.querySelectorAll('h2')].map(h => h.textContent)"
        )
        for title in (
            "Summary",
            "Arrivals over time",
            "Queue length over time",
            "Admissions per second vs admit_rate",
            "Origin concurrency vs capacity",
            "Errors over time",
            "Wait-time distribution",
            "ETA error: estimated vs actual wait",
            "Fairness: join order vs admission order",
        ):
            assert title in headings
        charts = await page.evaluate(
            "[...document.querySelectorAll('svg.chart')].map(s => {"
            " const r = s.getBoundingClientRect();"
            " return {name: s.dataset.chart, w: r.width, h: r.height,"
            " marks: s.querySelectorAll('polyline, rect, circle').length}; })"
        )
        assert len(charts) == 8
        for chart in charts:
            assert chart["w"] > 300 and chart["h"] > 100, chart
            assert chart["marks"] > 0, chart
        cells = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#summary tbody tr')].map(tr =>"
            " [tr.querySelector('th').textContent,"
            "  [...tr.querySelectorAll('td')].map(td => td.textContent)]))"
        )
        assert cells["registrations completed"] == ["110", "110"]
        assert cells["origin errors (5xx)"] == ["90", "0"]
        assert cells["peak origin concurrency"] == ["45", "15"]
        assert cells["peak / capacity"] == ["2.25", "0.75"]
        assert cells["fairness: Kendall tau-b, join vs admission (post-opening)"] == ["-1", "1"]
        assert cells["pre-queue admitted before later arrivals"] == ["yes", "yes"]
        assert cells["wait p95 (s)"][1] == "95"
        # Nothing was fetched from anywhere: the page is one file.
        assert await page.evaluate("performance.getEntriesByType('resource').length") == 0
        assert tab.console_errors == [] and tab.network_errors == []


def test_one_run_is_enough_for_a_report() -> None:
    run = _known_run("queued", 0, 15)
    page = render_html([run], [summarise(run)])
    assert page.count('<svg class="chart"') == 8
    assert 'data-run="queued"' in page
