"""The words around the numbers: the verdict carries the record's numbers, figures are
rounded for reading, and the terminal summary and the report page say the same thing."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from simulator.records import RunRecord
from simulator.report import render_html
from simulator.stats import fairness, summarise
from simulator.summary import (
    FIGURES,
    NONE,
    SETTINGS,
    TEXT_WIDTH,
    format_value,
    render_text,
    setting_value,
    verdict,
)
from tests.helpers.known_runs import known_run


def runs() -> list[RunRecord]:
    """The known pair, with different numbers in every verdict field of the two runs."""
    direct = known_run("direct", errors_per_s=3, peak=45)
    for t in (12, 13, 13, 30):
        direct.series.add("origin_timeouts", t)
    for outcome in direct.registrants[:7]:
        outcome.completed_t = None
        outcome.gave_up_t, outcome.gave_up_reason = 30.0, "errors"
    direct = RunRecord.build(direct.meta, direct.series, direct.registrants)
    return [direct, known_run("queued", errors_per_s=0, peak=15)]


def test_format_value_rounds_for_reading() -> None:
    assert format_value(25.494, "seconds") == "25.5"
    assert format_value(95.0, "seconds") == "95"
    assert format_value(3.83, "seconds") == "3.8"
    assert format_value(1234.6, "seconds") == "1,235"
    assert format_value(-0.04, "seconds") == "0"
    assert format_value(5894, "count") == "5,894"
    assert format_value(0.9931, "ratio") == "0.993"
    assert format_value(-1.0, "ratio") == "-1"
    assert format_value(0.6667, "ratio", 2) == "0.67"
    assert format_value(0.00037, "percent") == "0.04 %"
    assert format_value(1.0, "percent") == "100 %"
    assert format_value(0.0, "percent") == "0 %"
    assert format_value(True, "yesno") == "yes" and format_value(False, "yesno") == "no"
    assert format_value(None, "count") == NONE


def test_the_verdict_carries_the_records_numbers() -> None:
    records = runs()
    text = verdict([summarise(r) for r in records])
    match = re.fullmatch(
        r"Without Gelombang: ([\d,]+) origin 5xx errors and ([\d,]+) timeouts, ([\d,]+) of "
        r"([\d,]+) registrants completed registration; through Gelombang: ([\d,]+) origin 5xx "
        r"errors and ([\d,]+) timeouts, ([\d,]+) of ([\d,]+) registrants completed "
        r"registration, fair order: nobody overtaken, τ = (-?[\d.]+)",
        text,
    )
    assert match, text
    numbers = [int(g.replace(",", "")) for g in match.groups()[:8]]
    expected = []
    for record in records:
        totals = record.totals
        expected += [totals.origin_errors, totals.origin_timeouts, totals.completed, totals.arrived]
    assert numbers == expected
    assert expected[:4] == [90, 4, 103, 110]  # the test's runs differ where it matters
    assert float(match.group(9)) == pytest.approx(fairness(records[1])["tau_b"], abs=5e-4)


def test_the_verdict_says_when_order_could_not_be_measured() -> None:
    record = known_run("queued", 0, 15)
    for outcome in record.registrants:
        outcome.admitted_t = None if not outcome.prequeue else outcome.admitted_t
    text = verdict([summarise(RunRecord.build(record.meta, record.series, record.registrants))])
    assert text.startswith("Through Gelombang: 0 origin 5xx errors")
    assert text.endswith("fair order not measured (fewer than 2 admitted after opening)")


def test_settings_show_what_each_run_used() -> None:
    direct, queued = (summarise(r) for r in runs())
    shown = {s.label: (setting_value(direct, s), setting_value(queued, s)) for s in SETTINGS}
    assert shown == {
        "registrants": ("110", "110"),
        "seed": ("1", "1"),
        "run length": ("40 s", "40 s"),
        "opens at": ("10 s", "10 s"),
        "admit_rate": (NONE, "4/s"),
        "admit_burst": (NONE, "4"),
        "max_active": (NONE, "no limit"),
        "session_ttl_s": (NONE, "30 s"),
        "quota": (NONE, "no limit"),
        "prequeue_s": (NONE, "10 s"),
        "abandon_after_s": (NONE, "45 s"),
        "origin capacity": ("20", "20"),
    }


class _Page(HTMLParser):
    """Table rows (header cell, then data cells) and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self._table = attributes.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            meaning = "meaning" in (attributes.get("class") or "")
            self._cell = None if meaning else []
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if not self._in_style:
            self.text.append(data)


def _terminal_rows(text: str, labels: list[str], runs: int) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        for label in labels:
            if line.startswith(label + "  "):
                rows[label] = line[len(label) :].split(None)
    # values may contain one space ("0.04 %"): rejoin "0.04", "%" pairs
    for label, cells in rows.items():
        joined: list[str] = []
        for cell in cells:
            if cell == "%" and joined:
                joined[-1] += " %"
            else:
                joined.append(cell)
        rows[label] = joined
        assert len(joined) == runs, (label, joined)
    return rows


def test_the_terminal_and_the_page_show_the_same_figures_under_the_same_names() -> None:
    records = runs()
    summaries = [summarise(r) for r in records]
    terminal = render_text(summaries)
    page = _Page()
    page.feed(render_html(records, summaries))
    html_rows = {row[0]: row[1:] for row in page.tables["summary"][1:]}
    labels = [f.label for group in FIGURES for f in group.figures]
    assert list(html_rows) == labels
    assert _terminal_rows(terminal, labels, runs=2) == html_rows
    assert page.tables["summary"][0][1:] == ["without Gelombang", "through Gelombang"]
    assert terminal.splitlines()[0] == verdict(summaries)
    visible = " ".join(page.text)
    assert verdict(summaries) in visible
    # Every figure is explained, in both.
    flat = " ".join(terminal.split())
    for group in FIGURES:
        assert group.meaning in flat
        assert group.meaning in visible
    # People read the runs' names, never the internal mode names.
    for text in (terminal, visible):
        assert "without Gelombang" in text and "through Gelombang" in text
        assert not re.search(r"\b(direct|queued)\b", text), text


def test_the_terminal_settings_agree_with_the_page() -> None:
    records = runs()
    summaries = [summarise(r) for r in records]
    terminal = render_text(summaries)
    page = _Page()
    page.feed(render_html(records, summaries))
    settings = {row[0]: row[1:] for row in page.tables["settings"][1:]}
    flat = " ".join(terminal.split())
    for label, values in settings.items():
        shown = [v for v in values if v != NONE]
        assert f"{label} {shown[-1]}" in flat, label


def test_terminal_lines_fit_a_terminal_but_the_verdict_stays_whole() -> None:
    lines = render_text([summarise(r) for r in runs()]).splitlines()
    assert len(lines[0]) > TEXT_WIDTH  # one line to paste, however long
    assert all(len(line) < TEXT_WIDTH for line in lines[1:]), max(lines[1:], key=len)


def test_the_benchmark_reads_the_counts_it_needs_from_the_terminal_summary() -> None:
    from loadtests.bench.simulation import read_summary

    record = known_run("queued", 0, 15)
    record.totals.peak_live_registrants = 12_345
    record.totals.rate_limited, record.totals.requests = 1_234, 56_789
    rows = read_summary(render_text([summarise(record)]))
    assert {label: rows[label] for label in ("arrived", "requests sent", "429 rate limited")} == {
        "arrived": "110",
        "requests sent": "56,789",
        "429 rate limited": "1,234",
    }
    assert rows["peak live registrants"] == "12,345"


def test_one_run_summarises_alone() -> None:
    summary: dict[str, Any] = summarise(known_run("queued", 0, 15))
    text = render_text([summary])
    assert text.startswith("Through Gelombang: 0 origin 5xx errors and 0 timeouts, 110 of 110")
    assert "through Gelombang" in [line.strip() for line in text.splitlines()]  # one column
