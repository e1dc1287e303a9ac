"""The texts people read, in Indonesian and English, from one table (`static/messages.json`):
the waiting page's, the status words and times the page and the call-back messages both say.
The page's script reads the same table (`http/waiting_page.py` hands it over)."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources

WIB = timezone(timedelta(hours=7))
"""Times on the page are Western Indonesian Time, as the programme announces them."""


@functools.cache
def messages() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = json.loads(
        (resources.files("queue_service") / "static" / "messages.json").read_text("utf-8")
    )
    return table


def eta_text(seconds: float | None, lang: str) -> str:
    """The estimated wait as words; mirrors the page script's eta() (a test keeps them equal)."""
    t = messages()[lang]
    if seconds is None or seconds < 0:
        return t["eta_unknown"]
    if seconds < 60:
        return t["eta_lt1"]
    minutes = round(seconds / 60)
    if minutes < 60:
        return t["eta_1m"] if minutes == 1 else t["eta_m"].replace("{m}", str(minutes))
    hours, rest = divmod(minutes, 60)
    if hours >= 10 or rest == 0:
        return t["eta_1h"] if hours == 1 else t["eta_h"].replace("{h}", str(hours))
    return t["eta_hm"].replace("{h}", str(hours)).replace("{m}", str(rest))


def local_time(when: float | str, lang: str) -> str:
    """A moment as the programme announces it: day, month, year and time in WIB."""
    t = messages()[lang]
    moment = (
        datetime.fromisoformat(when) if isinstance(when, str) else datetime.fromtimestamp(when, UTC)
    ).astimezone(WIB)
    return (
        t["time_format"]
        .replace("{d}", str(moment.day))
        .replace("{month}", t["months"].split(",")[moment.month - 1])
        .replace("{y}", str(moment.year))
        .replace("{hh}", f"{moment.hour:02d}")
        .replace("{mm}", f"{moment.minute:02d}")
    )


def clock_time(when: float, lang: str) -> str:
    """The time of day in WIB, as the page's script writes its own (02.31.05 / 02:31:05)."""
    moment = datetime.fromtimestamp(when, UTC).astimezone(WIB)
    separator = "." if lang == "id" else ":"
    return moment.strftime(f"%H{separator}%M{separator}%S") + " WIB"
