"""The report: numbers computed correctly from known inputs, and the HTML page as a real
browser (headless Chromium, driven by Playwright) renders it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from simulator.report import render_html, write_report
from simulator.stats import summarise
from tests.helpers.known_runs import known_run
from tests.helpers.pages import launch_chromium, open_tab


def test_report_files_are_written(tmp_path: Path) -> None:
    runs = [known_run("direct", 3, 45), known_run("queued", 0, 15)]
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
    runs = [known_run("direct", 3, 45), known_run("queued", 0, 15)]
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
            "Origin errors over time",
            "Requests refused by rate limits",
            "Wait to reach the origin",
            "Wait in line",
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
        assert len(charts) == 10
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
        assert cells["wait in line p95 (s)"][1] == "95"
        # It opens with the verdict, then the settings the runs used.
        opening = await page.evaluate(
            "[...document.body.children].slice(0, 4).map(e => e.tagName + ' ' + e.id)"
        )
        assert opening == ["H1 ", "P verdict", "H2 settings-heading", "TABLE settings"]
        verdict = await page.evaluate("document.querySelector('#verdict').textContent")
        assert verdict.startswith("Without Gelombang: 90 origin 5xx errors")
        assert "through Gelombang: 0 origin 5xx errors" in verdict
        runs_shown = await page.evaluate(
            "[...document.querySelectorAll('#summary thead th[data-run]')].map(t => t.textContent)"
        )
        assert runs_shown == ["without Gelombang", "through Gelombang"]
        settings = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#settings tbody tr')].map(tr =>"
            " [tr.querySelector('th').textContent,"
            "  [...tr.querySelectorAll('td:not(.meaning)')].map(td => td.textContent)]))"
        )
        assert settings["admit_rate"] == ["–", "4/s"]
        assert settings["origin capacity"] == ["20", "20"]
        # Each figure's meaning is on screen beside it.
        meanings = await page.evaluate(
            "[...document.querySelectorAll('#summary th.meaning')].map(t =>"
            " [t.textContent, t.getBoundingClientRect().width])"
        )
        assert len(meanings) >= 15 and all(width > 100 for _, width in meanings)
        visible = await page.evaluate("document.body.innerText")
        assert "direct" not in visible and "queued" not in visible
        # Nothing was fetched from anywhere: the page is one file.
        assert await page.evaluate("performance.getEntriesByType('resource').length") == 0
        assert tab.console_errors == []


def test_one_run_is_enough_for_a_report() -> None:
    run = known_run("queued", 0, 15)
    page = render_html([run], [summarise(run)])
    assert page.count('<svg class="chart"') == 10
    assert 'data-run="queued"' in page
