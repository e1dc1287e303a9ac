"""The waiting page (`GET /w/{wave}`), rendered on the server with the holder's real state.

The page's script takes over at once; the server's render is for the first paint and for a
phone without JavaScript: the state, position and estimated wait of the ticket in the page's
cookie (or the wave's state for someone who has none), the notice to enable JavaScript at the
top, and a refresh at the poll interval the queue asked for. The texts come from
`static/messages.json`, the same table the script uses.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import re
from importlib import resources
from typing import Any

import orjson

from queue_service.views import TicketView

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
NO_TICKET_REFRESH_S = 30
MIN_REFRESH_S = 5
MAX_REFRESH_S = 15 * 60


@functools.cache
def _static(name: str) -> str:
    return (resources.files("queue_service") / "static" / name).read_text(encoding="utf-8")


@functools.cache
def messages() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = json.loads(_static("messages.json"))
    return table


def language(accept_language: str) -> str:
    """Indonesian or English from Accept-Language, Indonesian first and as the fallback (the
    script does the same with navigator.languages)."""
    for part in accept_language.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in ("id", "in", "ms"):
            return "id"
        if code == "en":
            return "en"
    return "id"


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


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return orjson.dumps(value).decode().replace("</", "<\\/").replace("<!--", "<\\!--")


def _number(value: int | None, lang: str) -> str:
    if value is None:
        return "—"
    return f"{value:,}".replace(",", "." if lang == "id" else ",")


def _state_of(view: TicketView | None, info: dict[str, Any]) -> str:
    if view is not None:
        return view["state"]
    wave_state = info.get("state")
    if wave_state == "scheduled":
        return "notyet"
    if wave_state in ("closed", "full"):
        return str(wave_state)
    return "loading"


def render(wave: str, info: dict[str, Any], view: TicketView | None, lang: str) -> str:
    t = messages()[lang]
    state = _state_of(view, info)
    in_line = view is not None and state in ("waiting", "closing", "paused")
    if view is not None:
        refresh = view["poll_after_ms"] / 1000 if view["poll_after_ms"] else NO_TICKET_REFRESH_S
    else:
        refresh = NO_TICKET_REFRESH_S
    message = t.get(f"m_{state}", t["m_loading"])
    if state == "closing" and view is not None:
        key = "m_closing_quota" if view.get("closing_reason") == "quota" else "m_closing_time"
        message = t[key].replace("{t}", view.get("closes_at", ""))
    title = info.get("title") or wave
    eta = "—"
    if in_line and view is not None:
        eta = t["eta_paused"] if state == "paused" else eta_text(view["eta_s"], lang)
    values = {
        "lang": lang,
        "doc_title": f"{t['title']} · {title}",
        "refresh_s": str(int(min(MAX_REFRESH_S, max(MIN_REFRESH_S, refresh)))),
        "lang_label": t["lang_label"],
        "lang_btn": t["lang_btn"],
        "m_nojs": t["m_nojs"],
        "title": title,
        "state": state,
        "badge": t.get(f"s_{state}", t["s_loading"]),
        "t_position": t["position"],
        "position": _number(view["position"], lang) if in_line and view else "—",
        "t_ahead": t["ahead"],
        "ahead": _number(view["ahead"], lang) if in_line and view else "—",
        "t_eta": t["eta"],
        "eta": eta,
        "message": message,
        "t_updated": t["updated"],
        "updated": "—",
        "t_tip": t["tip"],
    }
    page = PLACEHOLDER.sub(lambda m: html.escape(values[m.group(1)]), _static("waiting.html"))
    return (
        page.replace("__WAVE_ID_JSON__", _script_json(wave))
        .replace("__MESSAGES_JSON__", _script_json(messages()))
        .replace("__INITIAL_JSON__", _script_json(view))
        .replace("__INFO_JSON__", _script_json(info))
    )


def etag(body: str) -> str:
    return 'W/"' + hashlib.blake2b(body.encode(), digest_size=12).hexdigest() + '"'
