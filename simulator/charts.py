"""A small SVG chart kit for the report: line charts, histograms and scatter plots as inline
`<svg>` strings (no script, no external resource), with readable axes.

- `line_chart(name, title, lines, y_label, ...)`, `histogram_chart(...)`,
  `scatter_chart(...)`, `empty_chart(name, title, message)`: one `<svg class="chart"
  data-chart="name">` each.
- Axis ticks fall on nice steps (1, 2 or 5 × 10^k, `nice_step`), are labelled with just the
  digits the step needs (`tick_label`), and time axes count seconds, minutes or hours,
  whichever reads best for the span (`time_unit`).

Charts know nothing of runs or records: the page decides what to draw and in which colour.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Literal

WIDTH, HEIGHT = 720, 240
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 30, 36
GREY = "#7f8c8d"
TICKS = 5  # about this many steps along an axis
CHAR_WIDTH = 6.5  # average width of a character of the 11 px legend text
LEGEND_ROW = 14  # px per legend row
HEADROOM = 1.05  # a line at its maximum stays clear of the top of the plot

AxisFormat = Literal["number", "time", "percent"]
Line = tuple[str, list[float], list[float], str, bool]  # label, xs, ys, colour, dashed


def nice_step(span: float, target: int = TICKS) -> float:
    """The smallest step of 1, 2 or 5 × 10^k that cuts `span` into at most `target` steps."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1.0, 2.0, 5.0):
        if raw <= multiple * magnitude * (1 + 1e-9):
            return multiple * magnitude
    return 10.0 * magnitude


def nice_ceiling(value: float, step: float) -> float:
    """`value` rounded up to a whole number of steps (at least one step)."""
    return max(step, math.ceil(value / step - 1e-9) * step)


def ticks(lo: float, hi: float, step: float) -> list[float]:
    """Multiples of `step` in [lo, hi]."""
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


def tick_label(value: float, step: float) -> str:
    """The tick's value with the digits its step needs: whole numbers without a decimal point,
    thousands as `k` and millions as `M` once the step reaches them."""
    if value == 0:
        return "0"
    scale, suffix = (1e6, "M") if step >= 1e5 else (1e3, "k") if step >= 1e3 else (1.0, "")
    scaled = value / scale
    whole = abs(scaled - round(scaled)) < 1e-9 * max(1.0, abs(scaled))
    return f"{scaled:,.{0 if whole else _decimals(step / scale)}f}{suffix}"


TimeUnit = tuple[str, float]  # suffix, seconds per unit


def time_unit(span_s: float) -> TimeUnit:
    """Seconds up to 5 minutes, minutes up to 5 hours, hours beyond."""
    if span_s > 5 * 3600:
        return "h", 3600.0
    if span_s > 300:
        return "min", 60.0
    return "s", 1.0


class Axis:
    """One axis: the data range it maps, its nice step and how its ticks read."""

    def __init__(self, lo: float, hi: float, fmt: AxisFormat, *, extend: bool) -> None:
        if hi <= lo:
            hi = lo + 1.0
        self.fmt = fmt
        self.unit: TimeUnit = time_unit(hi - lo) if fmt == "time" else ("", 1.0)
        per_unit = self.unit[1]
        self.step = nice_step((hi - lo) / per_unit) * per_unit
        # A value axis ends on a tick; a time axis ends where the data ends.
        self.lo, self.hi = lo, (nice_ceiling(hi, self.step) if extend else hi)

    def ticks(self) -> list[float]:
        return ticks(self.lo, self.hi, self.step)

    def label(self, value: float) -> str:
        if self.fmt == "percent":
            return tick_label(100 * value, 100 * self.step) + " %"
        suffix, per_unit = self.unit
        text = tick_label(value / per_unit, self.step / per_unit)
        return f"{text} {suffix}" if suffix else text


class Frame:
    """Maps data coordinates to the SVG plot area, which starts `legend_rows` below the title
    so the legend never covers the data."""

    def __init__(self, x: Axis, y: Axis, legend_rows: int = 0) -> None:
        self.x_axis, self.y_axis = x, y
        self.top = PAD_T + LEGEND_ROW * legend_rows

    def x(self, value: float) -> float:
        a = self.x_axis
        return PAD_L + (value - a.lo) / (a.hi - a.lo) * (WIDTH - PAD_L - PAD_R)

    def y(self, value: float) -> float:
        a = self.y_axis
        return HEIGHT - PAD_B - (value - a.lo) / (a.hi - a.lo) * (HEIGHT - self.top - PAD_B)


def _title(title: str) -> str:
    escaped = html.escape(title)
    return f'<text x="{WIDTH / 2}" y="16" class="title" text-anchor="middle">{escaped}</text>'


def _axes(frame: Frame, title: str, x_label: str, y_label: str) -> list[str]:
    parts = [
        _title(title),
        f'<line x1="{PAD_L}" y1="{HEIGHT - PAD_B}" x2="{WIDTH - PAD_R}" y2="{HEIGHT - PAD_B}" '
        'class="axis"/>',
        f'<line x1="{PAD_L}" y1="{frame.top}" x2="{PAD_L}" y2="{HEIGHT - PAD_B}" class="axis"/>',
    ]
    for value in frame.y_axis.ticks():
        y = frame.y(value)
        parts.append(
            f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{html.escape(frame.y_axis.label(value))}</text>"
        )
    for value in frame.x_axis.ticks():
        parts.append(
            f'<text x="{frame.x(value):.1f}" y="{HEIGHT - PAD_B + 14}" text-anchor="middle" '
            f'class="tick">{html.escape(frame.x_axis.label(value))}</text>'
        )
    parts.append(
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 4}" text-anchor="middle" class="label">'
        f"{html.escape(x_label)}</text>"
        f'<text x="12" y="{HEIGHT / 2}" text-anchor="middle" class="label" '
        f'transform="rotate(-90 12 {HEIGHT / 2})">{html.escape(y_label)}</text>'
    )
    return parts


LegendItem = tuple[str, str, bool]  # label, colour, dashed


def _legend_layout(items: list[LegendItem]) -> list[tuple[float, int, LegendItem]]:
    """(x, row, item) of each entry: left to right, on as many rows as it takes."""
    placed, x, row = [], float(PAD_L + 8), 0
    for item in items:
        width = 30 + CHAR_WIDTH * len(item[0])
        if x > PAD_L + 8 and x + width > WIDTH - PAD_R:
            x, row = float(PAD_L + 8), row + 1
        placed.append((x, row, item))
        x += width
    return placed


def legend_rows(items: list[LegendItem]) -> int:
    return 1 + max((row for _, row, _ in _legend_layout(items)), default=-1)


def _legend(items: list[LegendItem]) -> str:
    """Between the title and the plot area (see `Frame.top`)."""
    parts = []
    for x, row, (label, colour, dashed) in _legend_layout(items):
        y = PAD_T + LEGEND_ROW * row
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<line x1="{x:.1f}" y1="{y}" x2="{x + 18:.1f}" y2="{y}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
            f'<text x="{x + 22:.1f}" y="{y + 4}" class="legend">{html.escape(label)}</text>'
        )
    return "".join(parts)


def _svg(parts: list[str], name: str) -> str:
    body = "".join(parts)
    return (
        f'<svg class="chart" data-chart="{html.escape(name)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" width="{WIDTH}" height="{HEIGHT}">{body}</svg>'
    )


def downsample(
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


def _top(values: Sequence[float]) -> float:
    return max(values, default=0.0) or 1.0


def line_chart(
    name: str,
    title: str,
    lines: list[Line],
    y_label: str,
    x_label: str = "time since start of run",
    marker_x: float | None = None,
) -> str:
    x_max = max((max(xs) for _, xs, _, _, _ in lines if xs), default=1.0)
    y_max = _top([max(ys) for _, _, ys, _, _ in lines if ys])
    legend = [(label, colour, dashed) for label, _, _, colour, dashed in lines]
    frame = Frame(
        Axis(0.0, x_max, "time", extend=False),
        Axis(0.0, y_max * HEADROOM, "number", extend=True),
        legend_rows(legend),
    )
    parts = _axes(frame, title, x_label, y_label)
    if marker_x is not None:
        x = frame.x(marker_x)
        parts.append(
            f'<line x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{HEIGHT - PAD_B}" '
            f'class="marker"/><text x="{x + 3:.1f}" y="{frame.top + 10}" class="marker-label">'
            "opens</text>"
        )
    for _, xs, ys, colour, dashed in lines:
        xs2, ys2 = downsample(xs, ys)
        points = " ".join(
            f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in zip(xs2, ys2, strict=True)
        )
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}/>'
        )
    parts.append(_legend(legend))
    return _svg(parts, name)


def histogram_chart(
    name: str, title: str, runs: list[tuple[str, list[float], str]], x_label: str, bins: int = 30
) -> str:
    """Side-by-side bars of each run's share of values per bin (x is a time axis)."""
    values = [v for _, vs, _ in runs for v in vs]
    if not values:
        return empty_chart(name, title, "no admitted registrants")
    hi = max(values) or 1.0
    width = hi / bins
    shares_by_run = []
    for label, vs, colour in runs:
        counts = [0] * bins
        for v in vs:
            counts[min(bins - 1, int(v / width))] += 1
        total = len(vs) or 1
        shares_by_run.append((label, [c / total for c in counts], colour))
    y_max = _top([max(shares) for _, shares, _ in shares_by_run])
    legend = [(label, colour, False) for label, _, colour in shares_by_run]
    frame = Frame(
        Axis(0.0, hi, "time", extend=False),
        Axis(0.0, y_max * HEADROOM, "percent", extend=True),
        legend_rows(legend),
    )
    parts = _axes(frame, title, x_label, "share of registrants")
    bar = (frame.x(width) - frame.x(0)) / max(1, len(shares_by_run))
    for r, (_, shares, colour) in enumerate(shares_by_run):
        for k, share in enumerate(shares):
            if share <= 0:
                continue
            x = frame.x(k * width) + r * bar
            y = frame.y(share)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(1.0, bar - 1):.1f}" '
                f'height="{HEIGHT - PAD_B - y:.1f}" fill="{colour}" opacity="0.8"/>'
            )
    parts.append(_legend(legend))
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
    """Points (at most about 2,000 drawn); `diagonal` draws y = x on equal axes."""
    if not points:
        return empty_chart(name, title, "no data")
    fmt: AxisFormat = "time" if time_axis else "number"
    x_top = _top([x for x, _ in points])
    y_top = _top([y for _, y in points])
    if diagonal:
        x_top = y_top = max(x_top, y_top)
    x_axis = Axis(0.0, x_top, fmt, extend=True)
    y_axis = Axis(0.0, y_top, fmt, extend=True)
    frame = Frame(x_axis, y_axis)
    parts = _axes(frame, title, x_label, y_label)
    if diagonal:
        end = min(x_axis.hi, y_axis.hi)
        parts.append(
            f'<line x1="{frame.x(0):.1f}" y1="{frame.y(0):.1f}" x2="{frame.x(end):.1f}" '
            f'y2="{frame.y(end):.1f}" class="diagonal"/>'
        )
    step = max(1, len(points) // 2000)
    for x, y in points[::step]:
        parts.append(
            f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="1.6" fill="{colour}"/>'
        )
    return _svg(parts, name)


def empty_chart(name: str, title: str, message: str) -> str:
    return _svg(
        [
            _title(title),
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            f"{html.escape(message)}</text>",
        ],
        name,
    )
