"""What call-backs cost in messages: how many per channel, in total and in the busiest hour,
from a run's record (`TimeSeries.messages`: messages sent per bin, by channel). What an SMS or
WhatsApp gateway contract, an SMTP relay or a push budget is sized by (`gelombang plan`).

- `message_load(record) -> list[ChannelLoad]`: one row per channel used, then "all";
- `busiest_hour(counts, step_s)`: the most sent in any hour (a sliding window of bins; a run
  shorter than an hour is one hour: all of it);
- `render(loads, record)`: the planner's lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from queue_service.notify_config import CONTACT_KINDS
from simulator.records import RunRecord

HOUR_S = 3600.0
ALL = "all"


@dataclass(frozen=True)
class ChannelLoad:
    channel: str
    total: int
    peak_hour: int
    """The most messages in any one hour of the run."""


def busiest_hour(counts: list[int], step_s: float) -> int:
    width = max(1, math.floor(HOUR_S / step_s + 1e-9))
    if width >= len(counts):
        return sum(counts)
    window = best = sum(counts[:width])
    for k in range(width, len(counts)):
        window += counts[k] - counts[k - width]
        best = max(best, window)
    return best


def message_load(record: RunRecord) -> list[ChannelLoad]:
    series = record.series
    used = [c for c in CONTACT_KINDS if sum(series.messages.get(c, ()))]
    loads = [
        ChannelLoad(c, sum(series.messages[c]), busiest_hour(series.messages[c], series.step_s))
        for c in used
    ]
    every = [sum(counts) for counts in zip(*(series.messages[c] for c in used), strict=True)]
    loads.append(ChannelLoad(ALL, sum(every), busiest_hour(every, series.step_s)))
    return loads


def render(loads: list[ChannelLoad], record: RunRecord) -> str:
    callbacks = record.totals.callbacks or {}
    short = len(record.series) * record.series.step_s < HOUR_S
    lines = [
        "Call-back messages (full-size model run): "
        f"{callbacks.get('opted_in', 0):,} people opted in, "
        f"{callbacks.get('called_back', 0):,} were called back",
        f"  {'channel':<10}{'total':>12}{'busiest hour':>15}",
    ]
    lines += [f"  {x.channel:<10}{x.total:>12,}{x.peak_hour:>15,}" for x in loads]
    note = " (the run is shorter than an hour: all of it)" if short else ""
    carried = callbacks.get("carried_out", 0)
    moved = f", and one to each of the {carried:,} carried over to the next wave" if carried else ""
    lines.append(
        "  at most two per person (your turn is near; it is your turn)"
        f"{moved}; the busiest hour is what a gateway must take{note}"
    )
    return "\n".join(lines)
