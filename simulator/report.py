"""The run report: `report.json` and one self-contained HTML page from one or two runs.

Interface:

- `write_report(records, out_dir) -> list[Path]`: writes `report.json` and `report.html` for one
  run or two (typically "without Gelombang" and "through Gelombang" of the same scenario) and
  returns their paths.
- `render_html(records, summaries) -> str`: the page: the headline verdict, the wave settings,
  the summary table with what each figure means, then the charts, each with one line saying
  how to read it. Inline SVG and CSS, no script and no external URL, so it opens from a file
  anywhere.

The numbers come from `simulator.stats`, the words (labels, meanings, verdict) from
`simulator.summary`, the drawing from `simulator.charts`; this module puts them on the page.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from simulator.autopilot_trace import AutopilotTrace
from simulator.charts import (
    GREY,
    Line,
    empty_chart,
    histogram_chart,
    line_chart,
    scatter_chart,
)
from simulator.records import MODE_TITLES, RunRecord, TimeSeries
from simulator.stats import (
    join_and_admission_keys,
    origin_waits,
    post_opening_admitted,
    ranks,
    rate_limited_bot_share,
    signed_order,
    summarise,
    waits,
)
from simulator.summary import (
    SETTINGS,
    figure_value,
    figures_for,
    run_title,
    setting_value,
    verdict,
)

COLOURS = {"direct": "#c0392b", "queued": "#1f6fb2"}


def _per_second(series: TimeSeries, name: str) -> list[float]:
    return [v / series.step_s for v in getattr(series, name)]


def _colour(record: RunRecord) -> str:
    return COLOURS.get(record.meta.mode, GREY)


def _title(record: RunRecord) -> str:
    return MODE_TITLES[record.meta.mode]


Chart = tuple[str, str, str, str]  # chart id, heading, svg, how to read it


def _charts(records: list[RunRecord]) -> list[Chart]:
    """The charts in page order."""
    opens = records[0].meta.opens_at_s
    queued = [r for r in records if r.meta.mode == "queued"]
    charts: list[Chart] = []

    arrivals: list[Line] = [
        (
            f"arrivals/s, {_title(r)}",
            r.series.times(),
            _per_second(r.series, "arrivals"),
            _colour(r),
            False,
        )
        for r in records
    ]
    charts.append(
        (
            "arrivals",
            "Arrivals over time",
            line_chart("arrivals", "Arrivals per second", arrivals, "arrivals/s", marker_x=opens),
            "First attempts per second: the build-up, the spike at opening and its decay. The "
            "same crowd arrives in both runs.",
        )
    )

    queue: list[Line] = [
        (
            f"queue length, {_title(r)}",
            r.series.times(),
            [float(v) for v in r.series.queue_length],
            _colour(r),
            False,
        )
        for r in queued
    ]
    charts.append(
        (
            "queue",
            "Queue length over time",
            line_chart(
                "queue",
                "Queue length (waiting + pre-queue)",
                queue,
                "tickets waiting",
                marker_x=opens,
            )
            if queue
            else empty_chart("queue", "Queue length", "no run through Gelombang"),
            "Tickets waiting in the queue (pre-queue included): it grows while arrivals outpace "
            "admissions and drains after.",
        )
    )

    admissions: list[Line] = []
    for r in queued:
        source = "" if r.meta.source == "live" else f" ({r.meta.source})"
        admissions.append(
            (
                f"admissions/s{source}",
                r.series.times(),
                _per_second(r.series, "admissions"),
                _colour(r),
                False,
            )
        )
        admissions.append(
            (
                "admit_rate target",
                r.series.times(),
                [float(v) for v in r.series.admit_rate_target],
                GREY,
                True,
            )
        )
        burst = r.meta.admit_burst or 0.0
        if burst:  # the token bucket's bound on any one second: a full bucket plus a refill
            admissions.append(
                (
                    "most in one second: admit_rate + admit_burst",
                    r.series.times(),
                    [float(v) + burst if v else 0.0 for v in r.series.admit_rate_target],
                    "#b9770e",
                    True,
                )
            )
    charts.append(
        (
            "admissions",
            "Admissions per second vs admit_rate",
            line_chart(
                "admissions",
                "Admissions per second vs admit_rate",
                admissions,
                "per second",
                marker_x=opens,
            )
            if admissions
            else empty_chart("admissions", "Admissions per second", "no run through Gelombang"),
            "Registrants the queue let in per second against admit_rate (grey, dashed). At "
            "opening, and on resume, the token bucket is full: up to admit_burst go at once on "
            "top of the second's admit_rate (the burst at the marker, bounded by the orange "
            "line), then admit_rate holds. Below it when max_active holds admissions back or "
            "the line is empty.",
        )
    )

    concurrency: list[Line] = [
        (
            f"origin in flight, {_title(r)}",
            r.series.times(),
            [float(v) for v in r.series.origin_inflight],
            _colour(r),
            False,
        )
        for r in records
    ]
    first = records[0]
    capacity = [float(v) for v in first.series.origin_capacity]
    if not any(capacity) and first.meta.origin_capacity:
        capacity = [float(first.meta.origin_capacity)] * len(first.series)
    concurrency.append(("capacity", first.series.times(), capacity, GREY, True))
    charts.append(
        (
            "concurrency",
            "Origin concurrency vs capacity",
            line_chart(
                "concurrency",
                "Origin concurrency (peak per second) vs capacity",
                concurrency,
                "concurrent",
                marker_x=opens,
            ),
            "Requests the origin served at once (peak of each second) against its capacity "
            "(dashed): pinned at capacity means every worker was busy and requests had to wait.",
        )
    )

    errors: list[Line] = []
    for r in records:
        failures = [
            (e + t) / r.series.step_s
            for e, t in zip(r.series.origin_errors, r.series.origin_timeouts, strict=True)
        ]
        errors.append(
            (
                f"origin 5xx + timeouts/s, {_title(r)}",
                r.series.times(),
                failures,
                _colour(r),
                False,
            )
        )
    charts.append(
        (
            "errors",
            "Origin errors over time",
            line_chart(
                "errors",
                "Origin errors and timeouts per second",
                errors,
                "per second",
                marker_x=opens,
            ),
            "Origin 5xx answers and timeouts per second: what people see of an overloaded "
            "origin, and what makes them retry.",
        )
    )

    limited: list[Line] = [
        (
            f"429/s, {_title(r)}",
            r.series.times(),
            _per_second(r.series, "rate_limited"),
            _colour(r),
            False,
        )
        for r in records
        if any(r.series.rate_limited)
    ]
    shares = [
        f"{_title(r)}: {share:.0%} of them to bots"
        for r in records
        if (share := rate_limited_bot_share(r)) is not None
    ]
    charts.append(
        (
            "rate_limited",
            "Requests refused by rate limits",
            line_chart(
                "rate_limited",
                "Requests refused by rate limits (429) per second",
                limited,
                "per second",
                marker_x=opens,
            )
            if limited
            else empty_chart("rate_limited", "Requests refused by rate limits", "no 429 at all"),
            "Requests the queue (or origin) refused with 429 per second, on an axis of their "
            "own: a 429 is an answer to polling too fast and costs nobody a place, not an "
            "error of the origin" + (f" ({'; '.join(shares)})." if shares else "."),
        )
    )

    reach_runs = [(_title(r), origin_waits(r), _colour(r)) for r in records]
    if any(values for _, values, _ in reach_runs):
        charts.append(
            (
                "origin_waits",
                "Wait to reach the origin",
                histogram_chart(
                    "origin_waits",
                    "First attempt to the first request the origin served",
                    [run for run in reach_runs if run[1]],
                    "wait",
                ),
                "Share of those the origin served by how long it took from their first "
                "attempt: one clock for both runs (without Gelombang that time is spent on "
                "errors and retries, through it in line).",
            )
        )
    line_runs = [(_title(r), waits(r), _colour(r)) for r in queued]
    charts.append(
        (
            "waits",
            "Wait in line",
            histogram_chart("waits", "Joining the queue to admission", line_runs, "wait")
            if any(values for _, values, _ in line_runs)
            else empty_chart("waits", "Wait in line", "nobody admitted through Gelombang"),
            "Share of admitted registrants by their wait in line, from joining to the "
            "admission the queue signed (through Gelombang only: without it there is no line).",
        )
    )

    eta_points = [
        (float(o.eta_at_join_s), float(o.wait_s))
        for r in queued
        for o in r.registrants
        if o.eta_at_join_s is not None and o.wait_s is not None and not o.prequeue
    ]
    charts.append(
        (
            "eta",
            "ETA error: estimated vs actual wait",
            scatter_chart(
                "eta",
                "Estimated wait at join (x) vs actual wait (y)",
                eta_points,
                COLOURS["queued"],
                "estimated wait",
                "actual wait",
                diagonal=True,
            ),
            "One dot per registrant who joined after opening: on the diagonal the estimate was "
            "exact, above it the wait was longer than promised, below it shorter. The summary's "
            "ETA bias rows give the median by when people joined: a bias for late joiners "
            "shows there, not in the overall median.",
        )
    )

    if queued:
        r = queued[0]
        later = post_opening_admitted(r)
        join_key, admit_key = join_and_admission_keys(later, signed_order(later))
        in_join_order = sorted(zip(join_key, admit_key, strict=True))  # same second: join order
        ranks_join = list(range(len(in_join_order)))
        ranks_admit = ranks([a for _, a in in_join_order])
        points = [(float(a), float(b)) for a, b in zip(ranks_join, ranks_admit, strict=True)]
        charts.append(
            (
                "fairness",
                "Fairness: join order vs admission order",
                scatter_chart(
                    "fairness",
                    "Join rank (x) vs admission rank (y), post-opening arrivals",
                    points,
                    _colour(r),
                    "join rank",
                    "admission rank",
                    diagonal=True,
                    time_axis=False,
                ),
                "Join rank against admission rank of those who joined after opening: a straight "
                "diagonal is first come, first served; dots off it were overtaken or overtook.",
            )
        )
    return charts


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1080px;color:#222;padding:0 12px}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
p.verdict{font-size:1.1em;border-left:4px solid #1f6fb2;padding:8px 12px;background:#f4f8fb}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}thead th{background:#f2f2f2}
th.meaning,td.meaning{text-align:left;font-weight:normal;color:#555;font-size:.9em;max-width:40em}
svg.chart{max-width:100%;height:auto;font-size:11px;background:#fff}
svg .title{font-size:13px;font-weight:600}svg .axis{stroke:#444}svg .grid{stroke:#e5e5e5}
svg .marker{stroke:#999;stroke-dasharray:2 3}svg .marker-label{fill:#777}
svg .diagonal{stroke:#999;stroke-dasharray:4 4}svg .label{fill:#555}
.note,.explain{color:#666;font-size:.9em}
"""


def _run_headers(summaries: list[dict[str, Any]]) -> str:
    return "".join(
        f'<th data-run="{html.escape(s["mode"])}">{html.escape(run_title(s))}</th>'
        for s in summaries
    )


def _settings_table(summaries: list[dict[str, Any]]) -> str:
    rows = []
    for setting in SETTINGS:
        cells = "".join(
            f'<td data-key="settings.{setting.key}">{html.escape(setting_value(s, setting))}</td>'
            for s in summaries
        )
        rows.append(
            f"<tr><th>{html.escape(setting.label)}</th>{cells}"
            f'<td class="meaning">{html.escape(setting.meaning)}</td></tr>'
        )
    return (
        f'<table id="settings"><thead><tr><th></th>{_run_headers(summaries)}'
        f'<th class="meaning">what it is</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _summary_table(summaries: list[dict[str, Any]]) -> str:
    rows = []
    for group in figures_for(summaries):
        for position, figure in enumerate(group.figures):
            cells = "".join(
                f'<td data-key="{figure.key}">{html.escape(figure_value(s, figure))}</td>'
                for s in summaries
            )
            # One meaning per group, beside its first row. A header cell, so each row's
            # data cells are the runs' values only.
            meaning = (
                f'<th class="meaning" rowspan="{len(group.figures)}">'
                f"{html.escape(group.meaning)}</th>"
                if position == 0
                else ""
            )
            rows.append(f"<tr><th>{html.escape(figure.label)}</th>{cells}{meaning}</tr>")
    return (
        f'<table id="summary"><thead><tr><th></th>{_run_headers(summaries)}'
        f'<th class="meaning">what it means</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _autopilot_charts(trace: AutopilotTrace) -> list[Chart]:
    """The autopilot's target beside the origin's latency and errors, through Gelombang."""
    points = trace.timeline(every_s=1.0)
    times = [p[0] for p in points]
    drop = trace.capacity_drop_at_s
    colour = COLOURS["queued"]
    target: list[Line] = [
        ("max_active (the autopilot's target)", times, [float(p[2]) for p in points], colour,
         False),
        ("origin capacity (workers)", times, [float(p[1]) for p in points], GREY, True),
    ]  # fmt: skip
    latency: list[Line] = [
        ("origin p95 (the autopilot's signal)", times, [p[4] for p in points], colour, False),
    ]
    errors: list[Line] = [("origin 5xx/s", times, [p[3] for p in points], colour, False)]
    return [
        (
            "autopilot_target",
            "Autopilot: target vs the origin's capacity",
            line_chart(
                "autopilot_target",
                "max_active set by the autopilot",
                target,
                "sessions / workers",
                marker_x=drop,
            ),
            "The wave's max_active as the autopilot set it (one decision per interval) "
            "against the origin's worker pool, which loses half its workers at the marker.",
        ),
        (
            "autopilot_latency",
            "Autopilot: the origin's latency",
            line_chart(
                "autopilot_latency", "Origin p95 latency (Prometheus)", latency, "s", marker_x=drop
            ),
            "The latency signal the autopilot read from Prometheus: over its target it cuts "
            "max_active, well under it (and the slots used) it adds to it.",
        ),
        (
            "autopilot_errors",
            "Autopilot: the origin's errors",
            line_chart(
                "autopilot_errors",
                "Origin 5xx per second (its /metrics)",
                errors,
                "per second",
                marker_x=drop,
            ),
            "503 (backlog full) and 504 (waited too long) answers of the protected origin, "
            "from its own counters.",
        ),
    ]


def render_html(
    records: list[RunRecord],
    summaries: list[dict[str, Any]],
    autopilot: AutopilotTrace | None = None,
) -> str:
    first = records[0].meta
    notes = list(dict.fromkeys(n for r in records for n in r.meta.notes))  # once each
    sampled = [r for r in records if r.meta.sample_every > 1]
    if sampled:
        notes.append(
            "Distributions and fairness use every k-th registrant (k = "
            + ", ".join(str(r.meta.sample_every) for r in sampled)
            + "); counts use all registrants."
        )
    sections = "".join(
        f'<h2 id="chart-{cid}">{html.escape(heading)}</h2>{svg}'
        f'<p class="explain">{html.escape(explain)}</p>'
        for cid, heading, svg, explain in [
            *_charts(records),
            *(_autopilot_charts(autopilot) if autopilot is not None else []),
        ]
    )
    autopilot_html = (
        '<ul id="autopilot">'
        + "".join(f"<li>{html.escape(line)}</li>" for line in autopilot.lines())
        + "</ul>"
        if autopilot is not None
        else ""
    )
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Gelombang wave report: {html.escape(first.scenario)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>Gelombang wave report: {html.escape(first.scenario)}</h1>"
        f'<p id="verdict" class="verdict">{html.escape(verdict(summaries))}</p>'
        f"{autopilot_html}"
        f'<h2 id="settings-heading">Wave settings</h2>{_settings_table(summaries)}'
        f'<h2 id="summary-heading">Summary</h2>{_summary_table(summaries)}'
        f"{sections}"
        + (f'<h2>Notes</h2><ul class="note">{note_html}</ul>' if note_html else "")
        + "</body></html>"
    )


def write_report(
    records: Sequence[RunRecord], out_dir: str | Path, autopilot: AutopilotTrace | None = None
) -> list[Path]:
    records = list(records)
    if not records:
        raise ValueError("write_report needs at least one run record")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = [summarise(r) for r in records]
    json_path = out / "report.json"
    json_path.write_bytes(
        orjson.dumps(
            {
                "verdict": verdict(summaries),
                "runs": summaries,
                **({"autopilot": autopilot.to_json()} if autopilot is not None else {}),
            },
            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
        )
    )
    html_path = out / "report.html"
    html_path.write_text(render_html(records, summaries, autopilot), "utf-8")
    return [json_path, html_path]
