"""The words around the numbers: what the terminal summary and the report page both say.

One definition of every figure (its label, how it is rounded, what it means in one line), of
the wave settings and of the headline verdict, so the terminal and the HTML page cannot
disagree. Everything here reads `simulator.stats.summarise(record)` dictionaries.

- `verdict(summaries) -> str`: one line to paste into a change request.
- `FIGURES`, `format_value(value, figure)`, `figure_value(summary, figure)`: the summary rows.
- `SETTINGS`, `setting_value(summary, setting)`: the wave settings the runs used.
- `figures_for(summaries)`: FIGURES, and the call-back rows when a run had call-backs.
- `render_text(summaries) -> str`: the terminal summary (verdict, settings, figures, each
  group's meaning below it, wrapped to the terminal).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from simulator.records import MODE_TITLES

Kind = Literal["count", "seconds", "ratio", "percent", "yesno"]
TEXT_WIDTH = 100  # terminal lines, the verdict excepted (it is pasted whole)
NONE = "–"  # no value: not measured in this run, or nothing to measure


@dataclass(frozen=True)
class Figure:
    label: str
    key: str  # dotted path into a summary, e.g. "wait_s.p50"
    kind: Kind = "count"
    digits: int = 3  # for ratios


@dataclass(frozen=True)
class FigureGroup:
    """Figures read together, explained by one line."""

    figures: tuple[Figure, ...]
    meaning: str


def _one(label: str, key: str, meaning: str, kind: Kind = "count", digits: int = 3) -> FigureGroup:
    return FigureGroup((Figure(label, key, kind, digits),), meaning)


FIGURES: tuple[FigureGroup, ...] = (
    # Every row means the same in both runs: where a figure has no meaning without the queue
    # (there is no line, no estimate, no admission), that run shows "–".
    _one(
        "arrived",
        "arrived",
        "registrants who made a first attempt during the run (the same crowd both times)",
    ),
    _one(
        "reached the origin",
        "reached_origin",
        "had at least one request served by the registration server (the origin)",
    ),
    _one(
        "admitted by the queue",
        "queue_admitted",
        "let in by Gelombang with an admission token (without it nobody is admitted: the "
        "crowd goes straight at the origin)",
    ),
    _one(
        "registrations completed",
        "completed",
        "finished the whole flow at the origin: account, KTP check, OTP, joining the wave",
    ),
    _one(
        "origin errors (5xx)",
        "origin_errors",
        "origin answers 503 (backlog full) or another 5xx; a 504 counts as a timeout",
    ),
    _one(
        "origin timeouts",
        "origin_timeouts",
        "origin answers 504 (waited too long for a worker), or none before the client gave up",
    ),
    FigureGroup(
        (
            Figure("peak origin concurrency", "peak_origin_inflight"),
            Figure("origin capacity", "origin_capacity"),
            Figure("peak / capacity", "peak_over_capacity", "ratio", 2),
        ),
        "most requests the origin served at once, against how many it can; 1 = every worker busy",
    ),
    FigureGroup(
        (
            Figure("wait to reach the origin p50 (s)", "origin_wait_s.p50", "seconds"),
            Figure("wait to reach the origin p95 (s)", "origin_wait_s.p95", "seconds"),
            Figure("wait to reach the origin p99 (s)", "origin_wait_s.p99", "seconds"),
        ),
        "first attempt to the first request the origin served, one clock for both runs: half, "
        "95 in 100 and 99 in 100 of those served waited at most this",
    ),
    FigureGroup(
        (
            Figure("wait in line p50 (s)", "wait_s.p50", "seconds"),
            Figure("wait in line p95 (s)", "wait_s.p95", "seconds"),
            Figure("wait in line p99 (s)", "wait_s.p99", "seconds"),
        ),
        "joining the queue to admission, as the queue signed it into the token (without "
        "Gelombang there is no line)",
    ),
    _one(
        "time to complete p50 (s)",
        "time_to_complete_s.p50",
        "first attempt to finished registration: half of those who finished took at most this",
        "seconds",
    ),
    FigureGroup(
        (
            Figure(
                "ETA error, median |actual − estimate| (s)", "eta_error_s.median_abs", "seconds"
            ),
            Figure("ETA error, p90 |actual − estimate| (s)", "eta_error_s.p90_abs", "seconds"),
            Figure("ETA bias, first third to join (s)", "eta_error_s.early_median", "seconds"),
            Figure("ETA bias, middle third to join (s)", "eta_error_s.middle_median", "seconds"),
            Figure("ETA bias, last third to join (s)", "eta_error_s.late_median", "seconds"),
        ),
        "the wait in line people had against the wait the queue estimated when they joined "
        "(after opening): how far off for half and for 90 %; then the median of actual − "
        "estimate by when they joined (+ = waited longer than told)",
    ),
    _one(
        "gave up: errors",
        "gave_up_errors",
        "stopped retrying after errors from the origin or the queue",
    ),
    _one(
        "gave up: balked, reneged",
        "gave_up_balked_reneged",
        "left the queue on seeing the estimated wait, or when their patience ran out",
    ),
    _one(
        "gave up: other",
        "gave_up_other",
        "input refused (e.g. under age), ticket expired or skipped as abandoned, left mid-flow",
    ),
    _one(
        "still trying at the end",
        "still_trying_at_end",
        "waiting or mid-flow when the run stopped (runs are bounded)",
    ),
    FigureGroup(
        (
            Figure("429 rate limited", "rate_limited"),
            Figure("429s that went to bots", "rate_limited_bot_share", "percent"),
            Figure("bots in the crowd", "bot_share", "percent"),
        ),
        "requests refused by rate limits (a 429 costs nobody a place), the share of them that "
        "went to bots against the bots' share of the crowd; the rest went to people polling "
        "from several tabs or refreshing by hand",
    ),
    _one(
        "requests sent",
        "requests",
        "every HTTP request the crowd made, status polls included",
    ),
    _one(
        "peak live registrants",
        "peak_live_registrants",
        "most registrants the simulator held at once, each trying or waiting",
    ),
    _one(
        "fairness: Kendall tau-b, join vs admission (post-opening)",
        "fairness.tau_b",
        "join order (ticket number) vs admission order (the second the queue signed) after "
        "opening; 1 = first come, first served, less the ties of admissions in one second",
        "ratio",
    ),
    _one(
        "fairness: overtaken pair share",
        "fairness.overtaken_pair_share",
        "pairs of registrants in which the later joiner was admitted in a strictly earlier second",
        "percent",
    ),
    _one(
        "fairness: max rank displacement",
        "fairness.max_rank_displacement",
        "the most places anyone moved between join order and admission order",
    ),
    _one(
        "pre-queue admitted before later arrivals",
        "fairness.prequeue_admitted_first",
        "no pre-queue admission was signed in a later second than any admission of someone "
        "who joined after opening (the same second is in order: the queue admits the block "
        "first)",
        "yesno",
    ),
    _one(
        "pre-queue block: tau-b inside (≈0 for a fair shuffle)",
        "fairness.prequeue_tau_b",
        "the pre-queue is shuffled at opening: near 0 means joining it early bought nothing",
        "ratio",
    ),
)


CALLBACK_FIGURES: tuple[FigureGroup, ...] = (
    FigureGroup(
        (
            Figure("call-backs: opted in", "callbacks.opted_in"),
            Figure("called back", "callbacks.called_back"),
            Figure("came back in time", "callbacks.came_back_in_time"),
            Figure("came back in time, of those called back", "callbacks.in_time_share", "percent"),
        ),
        "people who left the waiting page to be called back (SMS, WhatsApp, e-mail, push); "
        "those a message reached (their turn was near, or had come); those back by the return "
        "link while their place held (before their turn, or within the return window)",
    ),
    _one(
        "person-hours of polling spared",
        "callbacks.away_hours",
        "hours the people called back did not spend on the waiting page: from opting in to "
        "coming back (or to the end of their place, for those who meant to come back late)",
        "ratio",
        1,
    ),
)


def figures_for(summaries: Sequence[dict[str, Any]]) -> tuple[FigureGroup, ...]:
    """Every figure, with the call-back rows only when a run had call-backs."""
    if any(s.get("callbacks") for s in summaries):
        return FIGURES + CALLBACK_FIGURES
    return FIGURES


def lookup(summary: dict[str, Any], key: str) -> Any:
    """The value at a dotted key, None where any part is missing."""
    value: Any = summary
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def figure_value(summary: dict[str, Any], figure: Figure) -> str:
    return format_value(lookup(summary, figure.key), figure.kind, figure.digits)


def format_value(value: Any, kind: Kind, digits: int = 3) -> str:
    """Rounded for reading: counts with thousands separators, seconds to 0.1 s below 100 s
    and whole above, ratios to `digits` decimals, shares as percentages, whole numbers without
    a decimal point."""
    if value is None:
        return NONE
    if kind == "yesno" or isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "count":
        return f"{round(value):,}"
    if kind == "seconds":
        return _trim(f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}")
    if kind == "percent":
        share = 100 * value
        return _trim(f"{share:.2f}" if abs(share) < 10 else f"{share:.1f}") + " %"
    return _trim(f"{value:.{digits}f}")


def _trim(number: str) -> str:
    """Drop trailing decimal zeros: 95.0 reads 95, 0.250 reads 0.25, -0.0 reads 0."""
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return "0" if number in ("-0", "") else number


def run_title(summary: dict[str, Any]) -> str:
    title = MODE_TITLES[summary["mode"]]
    return title + " (offline model)" if summary.get("source") == "model" else title


# ----------------------------------------------------------------------------- the verdict


def verdict(summaries: Sequence[dict[str, Any]]) -> str:
    """One line an SRE can paste into a change request, e.g. "without Gelombang: 5,894 origin
    5xx errors and 37 timeouts, 625 of 1,964 registrants completed registration; through
    Gelombang: 0 origin 5xx errors and 0 timeouts, 1,135 of 1,964 completed registration,
    fair order: nobody overtaken, τ = 0.993"."""
    parts = []
    for s in summaries:
        part = (
            f"{run_title(s)}: {s['origin_errors']:,} origin 5xx errors and "
            f"{s['origin_timeouts']:,} timeouts, {s['completed']:,} of {s['arrived']:,} "
            "registrants completed registration"
        )
        if s["mode"] == "queued":
            part += ", " + _fair_order(s)
        parts.append(part)
    text = "; ".join(parts)
    return text[:1].upper() + text[1:]


def _fair_order(summary: dict[str, Any]) -> str:
    tau = lookup(summary, "fairness.tau_b")
    if tau is None:
        return "fair order not measured (fewer than 2 admitted after opening)"
    overtaken = lookup(summary, "fairness.overtaken_pair_share")
    who = (
        "nobody overtaken"
        if not overtaken
        else f"{format_value(overtaken, 'percent')} of pairs overtaken"
    )
    return f"fair order: {who}, τ = {format_value(tau, 'ratio')}"


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    label: str
    key: str  # in summary["settings"]
    unit: str  # "s", "/s" or "" (a count)
    meaning: str
    queue_only: bool = True  # means nothing without the queue
    zero_means_none: bool = False  # 0 or missing = no limit


SETTINGS: tuple[Setting, ...] = (
    Setting("registrants", "registrants", "", "people who arrived in the run", queue_only=False),
    Setting("seed", "seed", "", "the same seed gives the same people and arrivals", False),
    Setting("run length", "duration_s", "s", "each run stops after this long", False),
    Setting("opens at", "opens_at_s", "s", "the wave opens this long after the start", False),
    Setting("admit_rate", "admit_rate", "/s", "admissions per second the queue allows"),
    Setting("admit_burst", "admit_burst", "", "admissions the queue may release at once"),
    Setting(
        "max_active",
        "max_active",
        "",
        "admitted sessions not yet completed, at most",
        zero_means_none=True,
    ),
    Setting("session_ttl_s", "session_ttl_s", "s", "an admission not completed is freed after"),
    Setting("quota", "quota", "", "registrations the wave accepts", zero_means_none=True),
    Setting("prequeue_s", "prequeue_s", "s", "joiners this long before opening are shuffled"),
    Setting("abandon_after_s", "abandon_after_s", "s", "a ticket not polled this long is skipped"),
    Setting(
        "origin capacity",
        "origin_capacity",
        "",
        "requests the origin serves at once; more wait in its backlog or get a 503",
        queue_only=False,
    ),
)


def setting_value(summary: dict[str, Any], setting: Setting) -> str:
    if setting.queue_only and summary["mode"] != "queued":
        return NONE  # no queue in front: the queue's settings played no part
    value = lookup(summary, f"settings.{setting.key}")
    if setting.zero_means_none and not value:
        return "no limit"
    if value is None:
        return NONE
    if setting.key == "seed":
        return f"{value}"
    number = _trim(f"{value:,.1f}") if isinstance(value, float) else f"{value:,}"
    return f"{number} s" if setting.unit == "s" else number + setting.unit


def _settings_text(summaries: Sequence[dict[str, Any]]) -> str:
    items = []
    for setting in SETTINGS:
        shown = {run_title(s): setting_value(s, setting) for s in summaries}
        values = list(dict.fromkeys(v for v in shown.values() if v != NONE))
        if not values:
            continue
        if len(values) == 1:
            items.append(f"{setting.label} {values[0]}")
        else:
            items.append(f"{setting.label} " + " / ".join(f"{v} ({t})" for t, v in shown.items()))
    return _wrap_items("settings: ", items)


def _wrap_items(prefix: str, items: list[str]) -> str:
    """`prefix` and the items, comma-separated, wrapped between items (never inside one)."""
    lines, current = [], prefix
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if current.strip() and len(current) + len(piece) >= TEXT_WIDTH:
            lines.append(current.rstrip())
            current = "    "
        current += piece + " "
    lines.append(current.rstrip())
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the terminal


def render_text(summaries: Sequence[dict[str, Any]]) -> str:
    """The terminal summary: the verdict, the settings, then every figure with its meaning on
    the line below."""
    titles = [run_title(s) for s in summaries]
    groups = figures_for(summaries)
    labels = [f.label for group in groups for f in group.figures]
    width = max(len(label) for label in labels) + 2
    widths = [max(len(t), 8) + 2 for t in titles]
    lines = [verdict(summaries), "", _settings_text(summaries), ""]
    lines.append("".ljust(width) + "".join(t.rjust(w) for t, w in zip(titles, widths, strict=True)))
    for group in groups:
        for figure in group.figures:
            cells = "".join(
                figure_value(s, figure).rjust(w) for s, w in zip(summaries, widths, strict=True)
            )
            lines.append(figure.label.ljust(width) + cells)
        lines += textwrap.wrap(
            group.meaning, TEXT_WIDTH - 1, initial_indent="    ", subsequent_indent="    "
        )
    return "\n".join(lines)
