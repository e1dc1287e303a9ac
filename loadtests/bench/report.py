"""Benchmark results: one row per figure, printed as a table and optionally saved as JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

COLUMNS = (
    "benchmark",
    "median",
    "unit",
    "runs",
    "vs bare",
    "p99 ms",
    "cpu us/req",
    "vs bare (cpu)",
    "target",
    "met",
)


@dataclass
class Row:
    benchmark: str
    unit: str
    runs: list[float]
    target: str = ""
    met: bool | None = None
    """None = informational, no target."""
    ratio: float | None = None
    """Against the bare aiohttp handler measured in the same run."""
    p99_ms: float | None = None
    cpu_us: float | None = None
    """Server CPU time per request (median over runs), all its processes."""
    cpu_ratio: float | None = None
    """Bare handler's CPU per request / this one's: the throughput share on a dedicated core."""
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")


def _number(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _cells(row: Row) -> tuple[str, ...]:
    met = {None: "-", True: "yes", False: "NO"}[row.met]
    return (
        row.benchmark,
        _number(row.median),
        row.unit,
        " ".join(_number(r) for r in row.runs),
        "-" if row.ratio is None else f"{row.ratio:.2f}",
        "-" if row.p99_ms is None else f"{row.p99_ms:.2f}",
        "-" if row.cpu_us is None else f"{row.cpu_us:.1f}",
        "-" if row.cpu_ratio is None else f"{row.cpu_ratio:.2f}",
        row.target or "-",
        met,
    )


def table(rows: list[Row]) -> str:
    cells = [COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [f"- {r.benchmark}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + notes)


def save_json(rows: list[Row], path: Path) -> None:
    data = [{**asdict(r), "median": r.median} for r in rows]
    path.write_text(json.dumps(data, indent=2) + "\n")
