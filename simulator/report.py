"""The run report: `report.json` and one self-contained HTML page from one or two runs.

Interface:

- `write_report(records, out_dir) -> list[Path]`: writes `report.json` and `report.html` for one
  run or two (typically "direct" and "queued" of the same scenario) and returns their paths.
- `summarise(record) -> dict`: the numbers of one run (what the summary table shows).
- `render_html(records, summaries) -> str`: the page; inline SVG charts, inline CSS, no script
  and no external URL, so it opens from a file anywhere.
- Statistics, usable on their own: `percentile(values, q)` (nearest rank: the smallest value
  with at least q of the values at or below it), `kendall_tau_b(xs, ys)` (O(n log n), ties
  handled as in Knight 1966), `fairness(record)`.

Fairness, as WAVE-FACTS.md asks: Kendall's tau-b between join time and admission time over
registrants who joined after opening and were admitted (FIFO gives tau = 1); the share of
overtaken pairs and the largest rank displacement; for the pre-queue block, whether every
member was admitted before every later arrival, and tau inside the block (a uniform shuffle
gives tau near 0).
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from simulator.records import RunRecord, TimeSeries

# ----------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, q in [0, 1]: the ceil(q*n)-th smallest value (1-based)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be in [0, 1]")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _count_inversions(values: list[float]) -> int:
    """Pairs i < j with values[i] > values[j] (strictly), by bottom-up merge sort."""
    n = len(values)
    src, dst = list(values), [0.0] * n
    inversions, width = 0, 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid, hi = min(lo + width, n), min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if src[j] < src[i]:
                    dst[k] = src[j]
                    inversions += mid - i
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            dst[k : k + mid - i] = src[i:mid]
            k += mid - i
            dst[k : k + hi - j] = src[j:hi]
        src, dst = dst, src
        width *= 2
    return inversions


def _tied_pairs(sorted_values: Sequence[Any]) -> int:
    ties, run = 0, 1
    for a, b in itertools.pairwise(sorted_values):
        if a == b:
            run += 1
        else:
            ties += run * (run - 1) // 2
            run = 1
    return ties + run * (run - 1) // 2


def kendall_tau_b(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b of paired samples in O(n log n); None if undefined (n < 2 or constant)."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys must have the same length")
    n = len(xs)
    if n < 2:
        return None
    pairs = sorted(zip(xs, ys, strict=True))
    n0 = n * (n - 1) // 2
    n1 = _tied_pairs([p[0] for p in pairs])
    n3 = _tied_pairs(pairs)
    ys_in_x_order = [p[1] for p in pairs]
    # Discordant pairs: inversions of y in x order (pairs tied in x are sorted by y: none).
    discordant = _count_inversions(ys_in_x_order)
    n2 = _tied_pairs(sorted(ys))
    denominator = math.sqrt((n0 - n1) * (n0 - n2))
    if denominator == 0:
        return None
    concordant_minus_discordant = n0 - n1 - n2 + n3 - 2 * discordant
    return concordant_minus_discordant / denominator


def _ranks(values: Sequence[float]) -> list[int]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


def fairness(record: RunRecord) -> dict[str, Any]:
    opens = record.meta.opens_at_s
    admitted = [o for o in record.registrants if o.admitted_t is not None]
    later = [
        o for o in admitted if not o.prequeue and o.joined_t is not None and o.joined_t >= opens
    ]
    block = [o for o in admitted if o.prequeue]
    join_t = [o.joined_t or 0.0 for o in later]
    admit_t = [o.admitted_t or 0.0 for o in later]
    tau = kendall_tau_b(join_t, admit_t)
    pairs = len(later) * (len(later) - 1) // 2
    overtaken = _count_inversions([a for _, a in sorted(zip(join_t, admit_t, strict=True))])
    displacement = 0
    if later:
        displacement = max(abs(a - b) for a, b in zip(_ranks(join_t), _ranks(admit_t), strict=True))
    last_block = max((o.admitted_t or 0.0 for o in block), default=None)
    first_later = min(admit_t, default=None)
    block_first = None
    if last_block is not None and first_later is not None:
        block_first = last_block <= first_later
    block_tau = kendall_tau_b(
        [o.joined_t or 0.0 for o in block], [o.admitted_t or 0.0 for o in block]
    )
    return {
        "post_open_admitted": len(later),
        "tau_b": tau,
        "overtaken_pair_share": (overtaken / pairs) if pairs else None,
        "max_rank_displacement": displacement,
        "prequeue_admitted": len(block),
        "prequeue_admitted_first": block_first,
        "prequeue_tau_b": block_tau,
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def summarise(record: RunRecord) -> dict[str, Any]:
    meta, totals, series = record.meta, record.totals, record.series
    waits = [w for o in record.registrants if (w := o.wait_s) is not None]
    to_complete = [
        o.completed_t - o.arrival_t for o in record.registrants if o.completed_t is not None
    ]
    eta_errors = [
        (o.wait_s or 0.0) - (o.eta_at_join_s or 0.0)
        for o in record.registrants
        if o.wait_s is not None and o.eta_at_join_s is not None and not o.prequeue
    ]
    capacity = meta.origin_capacity or max(series.origin_capacity, default=0) or None
    peak = totals.peak_origin_inflight or max(series.origin_inflight, default=0)
    return {
        "mode": meta.mode,
        "scenario": meta.scenario,
        "source": meta.source,
        "seed": meta.seed,
        "population": meta.population,
        "sample_every": meta.sample_every,
        "arrived": totals.arrived,
        "joined": totals.joined,
        "admitted": totals.admitted,
        "completed": totals.completed,
        "gave_up": totals.gave_up,
        "origin_errors": totals.origin_errors,
        "origin_timeouts": totals.origin_timeouts,
        "rate_limited": totals.rate_limited,
        "peak_origin_inflight": peak,
        "origin_capacity": capacity,
        "peak_over_capacity": _round(peak / capacity) if capacity else None,
        "peak_queue_length": totals.peak_queue_length,
        "wait_s": {
            "p50": _round(percentile(waits, 0.50)),
            "p95": _round(percentile(waits, 0.95)),
            "p99": _round(percentile(waits, 0.99)),
            "n": len(waits),
        },
        "time_to_complete_s": {
            "p50": _round(percentile(to_complete, 0.50)),
            "p95": _round(percentile(to_complete, 0.95)),
            "n": len(to_complete),
        },
        "eta_error_s": {
            "median": _round(percentile(eta_errors, 0.5)),
            "median_abs": _round(percentile([abs(e) for e in eta_errors], 0.5)),
            "n": len(eta_errors),
        },
        "fairness": {
            k: _round(v) if isinstance(v, float) else v for k, v in fairness(record).items()
        },
    }


# ----------------------------------------------------------------------------- SVG charts

WIDTH, HEIGHT = 720, 240
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 28, 36
COLOURS = {"direct": "#c0392b", "queued": "#1f6fb2"}
GREY = "#7f8c8d"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        if value <= step * magnitude:
            return step * magnitude
    return 10.0 * magnitude


def _fmt(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value == int(value):
        return f"{int(value)}"
    return f"{value:.2f}"


def _fmt_time(seconds: float) -> str:
    if abs(seconds) >= 7200:
        return f"{seconds / 3600:.0f}h"
    if abs(seconds) >= 120:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


class _Frame:
    """Maps data coordinates to the SVG plot area."""

    def __init__(self, x_max: float, y_max: float, x_min: float = 0.0) -> None:
        self.x_min, self.x_max = x_min, x_max if x_max > x_min else x_min + 1.0
        self.y_max = _nice_max(y_max)

    def x(self, value: float) -> float:
        span = self.x_max - self.x_min
        return PAD_L + (value - self.x_min) / span * (WIDTH - PAD_L - PAD_R)

    def y(self, value: float) -> float:
        return HEIGHT - PAD_B - value / self.y_max * (HEIGHT - PAD_T - PAD_B)


def _title(title: str) -> str:
    escaped = html.escape(title)
    return f'<text x="{WIDTH / 2}" y="16" class="title" text-anchor="middle">{escaped}</text>'


def _axes(frame: _Frame, title: str, x_label: str, y_label: str, time_axis: bool) -> list[str]:
    parts = [
        _title(title),
        f'<line x1="{PAD_L}" y1="{HEIGHT - PAD_B}" x2="{WIDTH - PAD_R}" y2="{HEIGHT - PAD_B}" '
        'class="axis"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{HEIGHT - PAD_B}" class="axis"/>',
    ]
    for k in range(5):
        value = frame.y_max * k / 4
        y = frame.y(value)
        parts.append(
            f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(value)}</text>'
        )
    for k in range(6):
        value = frame.x_min + (frame.x_max - frame.x_min) * k / 5
        label = _fmt_time(value) if time_axis else _fmt(value)
        parts.append(
            f'<text x="{frame.x(value):.1f}" y="{HEIGHT - PAD_B + 14}" text-anchor="middle">'
            f"{label}</text>"
        )
    parts.append(
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 4}" text-anchor="middle" class="label">'
        f"{html.escape(x_label)}</text>"
        f'<text x="12" y="{HEIGHT / 2}" text-anchor="middle" class="label" '
        f'transform="rotate(-90 12 {HEIGHT / 2})">{html.escape(y_label)}</text>'
    )
    return parts


def _legend(items: list[tuple[str, str, bool]]) -> str:
    parts, x = [], PAD_L + 8
    for label, colour, dashed in items:
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<line x1="{x}" y1="{PAD_T + 6}" x2="{x + 18}" y2="{PAD_T + 6}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
            f'<text x="{x + 22}" y="{PAD_T + 10}">{html.escape(label)}</text>'
        )
        x += 30 + 7 * len(label)
    return "".join(parts)


def _svg(parts: list[str], name: str) -> str:
    body = "".join(parts)
    return (
        f'<svg class="chart" data-chart="{name}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'width="{WIDTH}" height="{HEIGHT}">{body}</svg>'
    )


def _downsample(
    xs: list[float], ys: list[float], limit: int = 800
) -> tuple[list[float], list[float]]:
    """Keep at most `limit` points: the maximum of each group, so peaks stay visible."""
    if len(xs) <= limit:
        return xs, ys
    group = math.ceil(len(xs) / limit)
    return (
        [xs[i] for i in range(0, len(xs), group)],
        [max(ys[i : i + group]) for i in range(0, len(ys), group)],
    )


Line = tuple[str, list[float], list[float], str, bool]  # label, xs, ys, colour, dashed


def line_chart(
    name: str,
    title: str,
    lines: list[Line],
    y_label: str,
    x_label: str = "time since start of run",
    marker_x: float | None = None,
) -> str:
    x_max = max((max(xs) for _, xs, _, _, _ in lines if xs), default=1.0)
    y_max = max((max(ys) for _, _, ys, _, _ in lines if ys), default=1.0)
    frame = _Frame(x_max, y_max * 1.05)
    parts = _axes(frame, title, x_label, y_label, time_axis=True)
    if marker_x is not None:
        x = frame.x(marker_x)
        parts.append(
            f'<line x1="{x:.1f}" y1="{PAD_T}" x2="{x:.1f}" y2="{HEIGHT - PAD_B}" class="marker"/>'
            f'<text x="{x + 3:.1f}" y="{PAD_T + 22}" class="marker-label">opens</text>'
        )
    for _, xs, ys, colour, dashed in lines:
        xs2, ys2 = _downsample(xs, ys)
        points = " ".join(
            f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in zip(xs2, ys2, strict=True)
        )
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}/>'
        )
    parts.append(_legend([(label, colour, dashed) for label, _, _, colour, dashed in lines]))
    return _svg(parts, name)


def histogram_chart(
    name: str, title: str, runs: list[tuple[str, list[float], str]], x_label: str, bins: int = 30
) -> str:
    values = [v for _, vs, _ in runs for v in vs]
    if not values:
        return _empty_chart(name, title, "no admitted registrants")
    hi = max(values) or 1.0
    width = hi / bins
    counts_by_run = []
    for label, vs, colour in runs:
        counts = [0] * bins
        for v in vs:
            counts[min(bins - 1, int(v / width))] += 1
        total = len(vs) or 1
        counts_by_run.append((label, [c / total for c in counts], colour))
    y_max = max(max(c) for _, c, _ in counts_by_run)
    frame = _Frame(hi, y_max * 1.05)
    parts = _axes(frame, title, x_label, "share of registrants", time_axis=True)
    bar = (frame.x(width) - frame.x(0)) / max(1, len(counts_by_run))
    for r, (_, shares, colour) in enumerate(counts_by_run):
        for k, share in enumerate(shares):
            if share <= 0:
                continue
            x = frame.x(k * width) + r * bar
            y = frame.y(share)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(1.0, bar - 1):.1f}" '
                f'height="{HEIGHT - PAD_B - y:.1f}" fill="{colour}" opacity="0.8"/>'
            )
    parts.append(_legend([(label, colour, False) for label, _, colour in counts_by_run]))
    return _svg(parts, name)


def scatter_chart(
    name: str,
    title: str,
    points: list[tuple[float, float]],
    colour: str,
    x_label: str,
    y_label: str,
    diagonal: bool,
    time_axis: bool = True,
) -> str:
    if not points:
        return _empty_chart(name, title, "no data")
    top = max(max(x for x, _ in points), max(y for _, y in points))
    frame = (
        _Frame(top, top * 1.05)
        if diagonal
        else _Frame(max(x for x, _ in points), max(y for _, y in points) * 1.05)
    )
    parts = _axes(frame, title, x_label, y_label, time_axis=time_axis)
    if diagonal:
        parts.append(
            f'<line x1="{frame.x(0):.1f}" y1="{frame.y(0):.1f}" x2="{frame.x(frame.x_max):.1f}" '
            f'y2="{frame.y(min(frame.x_max, frame.y_max)):.1f}" class="diagonal"/>'
        )
    step = max(1, len(points) // 2000)
    for x, y in points[::step]:
        parts.append(
            f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="1.6" fill="{colour}"/>'
        )
    return _svg(parts, name)


def _empty_chart(name: str, title: str, message: str) -> str:
    return _svg(
        [
            _title(title),
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            f"{html.escape(message)}</text>",
        ],
        name,
    )


# ----------------------------------------------------------------------------- the page


def _per_second(series: TimeSeries, name: str) -> list[float]:
    return [v / series.step_s for v in getattr(series, name)]


def _charts(records: list[RunRecord]) -> list[tuple[str, str, str]]:
    """(chart id, heading, svg) in page order."""
    charts: list[tuple[str, str, str]] = []
    opens = records[0].meta.opens_at_s

    def colour(record: RunRecord) -> str:
        return COLOURS.get(record.meta.mode, GREY)

    arrivals: list[Line] = [
        (
            f"arrivals/s ({r.meta.mode})",
            r.series.times(),
            _per_second(r.series, "arrivals"),
            colour(r),
            False,
        )
        for r in records
    ]
    queue: list[Line] = [
        (
            f"queue length ({r.meta.mode})",
            r.series.times(),
            [float(v) for v in r.series.queue_length],
            colour(r),
            False,
        )
        for r in records
        if r.meta.mode == "queued"
    ]
    charts.append(
        (
            "arrivals",
            "Arrivals over time",
            line_chart("arrivals", "Arrivals per second", arrivals, "arrivals/s", marker_x=opens),
        )
    )
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
            else _empty_chart("queue", "Queue length", "no queued run"),
        )
    )
    admissions: list[Line] = []
    for r in records:
        if r.meta.mode != "queued":
            continue
        admissions.append(
            (
                f"admissions/s ({r.meta.source})",
                r.series.times(),
                _per_second(r.series, "admissions"),
                colour(r),
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
            else _empty_chart("admissions", "Admissions per second", "no queued run"),
        )
    )
    concurrency: list[Line] = []
    for r in records:
        concurrency.append(
            (
                f"origin in flight ({r.meta.mode})",
                r.series.times(),
                [float(v) for v in r.series.origin_inflight],
                colour(r),
                False,
            )
        )
    if records:
        r0 = records[0]
        capacity = [float(v) for v in r0.series.origin_capacity]
        if not any(capacity) and r0.meta.origin_capacity:
            capacity = [float(r0.meta.origin_capacity)] * len(r0.series)
        concurrency.append(("capacity", r0.series.times(), capacity, GREY, True))
    charts.append(
        (
            "concurrency",
            "Origin concurrency vs capacity",
            line_chart(
                "concurrency",
                "Origin concurrency (peak per bin) vs capacity",
                concurrency,
                "concurrent",
                marker_x=opens,
            ),
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
                f"origin 5xx + timeouts/s ({r.meta.mode})",
                r.series.times(),
                failures,
                colour(r),
                False,
            )
        )
        if any(r.series.rate_limited):
            errors.append(
                (
                    f"429/s ({r.meta.mode})",
                    r.series.times(),
                    _per_second(r.series, "rate_limited"),
                    colour(r),
                    True,
                )
            )
    charts.append(
        (
            "errors",
            "Errors over time",
            line_chart(
                "errors",
                "Origin errors and timeouts per second",
                errors,
                "per second",
                marker_x=opens,
            ),
        )
    )
    waits = [
        (r.meta.mode, [w for o in r.registrants if (w := o.wait_s) is not None], colour(r))
        for r in records
    ]
    charts.append(
        (
            "waits",
            "Wait-time distribution",
            histogram_chart("waits", "Wait from joining (or arriving) to admission", waits, "wait"),
        )
    )
    eta_points = [
        (o.eta_at_join_s, o.wait_s)
        for r in records
        if r.meta.mode == "queued"
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
                [(float(x), float(y)) for x, y in eta_points],
                COLOURS["queued"],
                "estimated wait",
                "actual wait",
                diagonal=True,
            ),
        )
    )
    for r in records:
        if r.meta.mode != "queued":
            continue
        later = [
            o
            for o in r.registrants
            if o.admitted_t is not None
            and not o.prequeue
            and o.joined_t is not None
            and o.joined_t >= r.meta.opens_at_s
        ]
        ranks_join = _ranks([o.joined_t or 0.0 for o in later])
        ranks_admit = _ranks([o.admitted_t or 0.0 for o in later])
        points = [(float(a), float(b)) for a, b in zip(ranks_join, ranks_admit, strict=True)]
        charts.append(
            (
                "fairness",
                "Fairness: join order vs admission order",
                scatter_chart(
                    "fairness",
                    "Join rank (x) vs admission rank (y), post-opening arrivals",
                    points,
                    colour(r),
                    "join rank",
                    "admission rank",
                    diagonal=True,
                    time_axis=False,
                ),
            )
        )
        break
    return charts


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:980px;color:#222;padding:0 12px}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f2f2f2}
svg.chart{max-width:100%;height:auto;font-size:11px;background:#fff}
svg .title{font-size:13px;font-weight:600}svg .axis{stroke:#444}svg .grid{stroke:#e5e5e5}
svg .marker{stroke:#999;stroke-dasharray:2 3}svg .marker-label{fill:#777}
svg .diagonal{stroke:#999;stroke-dasharray:4 4}svg .label{fill:#555}
.note{color:#666;font-size:.9em}
"""


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


SUMMARY_ROWS: list[tuple[str, str, Any]] = [
    ("registrations completed", "completed", None),
    ("admitted", "admitted", None),
    ("arrived", "arrived", None),
    ("origin errors (5xx)", "origin_errors", None),
    ("origin timeouts", "origin_timeouts", None),
    ("429 rate limited", "rate_limited", None),
    ("peak origin concurrency", "peak_origin_inflight", None),
    ("origin capacity", "origin_capacity", None),
    ("peak / capacity", "peak_over_capacity", None),
    ("wait p50 (s)", "wait_s", "p50"),
    ("wait p95 (s)", "wait_s", "p95"),
    ("wait p99 (s)", "wait_s", "p99"),
    ("time to complete p50 (s)", "time_to_complete_s", "p50"),
    ("ETA error, median |actual − estimate| (s)", "eta_error_s", "median_abs"),
    ("fairness: Kendall tau-b, join vs admission (post-opening)", "fairness", "tau_b"),
    ("fairness: overtaken pair share", "fairness", "overtaken_pair_share"),
    ("fairness: max rank displacement", "fairness", "max_rank_displacement"),
    ("pre-queue admitted before later arrivals", "fairness", "prequeue_admitted_first"),
    ("pre-queue block: tau-b inside (≈0 for a fair shuffle)", "fairness", "prequeue_tau_b"),
]


def _summary_table(summaries: list[dict[str, Any]]) -> str:
    head = "".join(
        f'<th data-run="{html.escape(s["mode"])}">{html.escape(s["mode"])}</th>' for s in summaries
    )
    rows = []
    for label, key, sub in SUMMARY_ROWS:
        cells = []
        for s in summaries:
            value = s.get(key)
            if sub is not None:
                value = value.get(sub) if isinstance(value, dict) else None
            cells.append(f'<td data-key="{key}{"." + sub if sub else ""}">{_cell(value)}</td>')
        rows.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>")
    return (
        f'<table id="summary"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def render_html(records: list[RunRecord], summaries: list[dict[str, Any]]) -> str:
    first = records[0].meta
    runs = ", ".join(f"{r.meta.mode} ({r.meta.source}, seed {r.meta.seed})" for r in records)
    notes = list(dict.fromkeys(n for r in records for n in r.meta.notes))  # once each
    sampled = [r for r in records if r.meta.sample_every > 1]
    if sampled:
        notes.append(
            "Distributions and fairness use every k-th registrant (k = "
            + ", ".join(str(r.meta.sample_every) for r in sampled)
            + "); counts use all registrants."
        )
    charts = _charts(records)
    sections = "".join(
        f'<h2 id="chart-{cid}">{html.escape(heading)}</h2>{svg}' for cid, heading, svg in charts
    )
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Gelombang wave report: {html.escape(first.scenario)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>Gelombang wave report: {html.escape(first.scenario)}</h1>"
        f'<p class="note">Runs: {html.escape(runs)}. {first.population:,} registrants; the wave '
        f"opens {_fmt_time(first.opens_at_s)} after the start of the run.</p>"
        f'<h2 id="summary-heading">Summary</h2>{_summary_table(summaries)}'
        f"{sections}"
        + (f'<h2>Notes</h2><ul class="note">{note_html}</ul>' if note_html else "")
        + "</body></html>"
    )


def write_report(records: Sequence[RunRecord], out_dir: str | Path) -> list[Path]:
    records = list(records)
    if not records:
        raise ValueError("write_report needs at least one run record")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = [summarise(r) for r in records]
    json_path = out / "report.json"
    json_path.write_bytes(
        orjson.dumps({"runs": summaries}, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    html_path = out / "report.html"
    html_path.write_text(render_html(records, summaries), "utf-8")
    return [json_path, html_path]
