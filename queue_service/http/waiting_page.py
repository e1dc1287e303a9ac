"""The waiting page (`GET /w/{wave}`), rendered on the server with the holder's real state, and
the small pages that stand in for it when it cannot be rendered.

The page's script takes over at once; the server's render is for the first paint and for a
phone without JavaScript, which gets a page that works on its own: the state, position and
estimated wait of the ticket in the page's cookie (or of `?ticket=`), a button that joins with
a plain form post (`POST /w/{wave}`, then back here with the ticket in a cookie), a link to the
registration site once admitted, and a refresh at the poll interval the queue asked for, only
while there is something to wait for. The texts come from `static/messages.json`, the same
table the script uses (keys starting `nojs_` and `busy_` are the server's alone).

When the process sheds load or Redis is unreachable, the page is `shed_page_bytes()`: a tiny
bilingual page, built once, that says the place is safe and loads the waiting page again after
`Retry-After` (a script adds jitter so a crowd does not come back in step). The connection
limit (server.py) serves the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import html
import math
import re
import time
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from queue_service.overload import SHED_RETRY_AFTER_S
from queue_service.texts import clock_time, eta_text, local_time, messages

if TYPE_CHECKING:
    from queue_service.views import TicketView
    from queue_service.waves import WaveConfig

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
"""`{{name}}` in waiting.html: replaced by the value, HTML-escaped, unless the name ends in
`_html` (markup built here, every piece of text in it escaped)."""
MIN_REFRESH_S = 5
MAX_REFRESH_S = 15 * 60
BRAND = "Gelombang"
"""Shown at the top of the page when the wave names no operator."""
SERVER_ONLY_PREFIXES = ("nojs_", "busy_", "cbm_", "cbr_")
CALLBACK_PREFIX = "cb_"
SERVER_ONLY_KEYS = frozenset(
    {"months", "time_format", "join", "s_join", "s_needjs", "m_needjs", "s_busy"}
)
"""Texts of states only the server renders (the script joins by itself, and does the work a
proof-of-work wave asks for): left out of the page's script."""
LIVE_STATES = frozenset({"prequeue", "waiting", "closing", "paused"})
DONE_STATES = frozenset({"completed", "closed", "full", "unknown"})
"""Nothing more will happen on the page: it says so, and stops refreshing."""
SHOWS_HAVE_READY = LIVE_STATES | {"join", "notyet", "admitted", "loading", "solving", "needjs"}
REFUSED_STATES = {
    "already_queued": "elsewhere",
    "already_completed": "completed",
    "wave_closed": "closed",
    "wave_full": "full",
    "wave_not_open_yet": "notyet",
    "enqueue_token_required": "verify",
    "invalid_enqueue_token": "verify",
    "proof_of_work_required": "needjs",
    "busy": "join",
}
"""A form join's refusal (`?refused=<code>` after the redirect) and the state it shows."""
BUSY_CODES = frozenset({"rate_limited", "store_unavailable", "overloaded"})


@functools.cache
def _static(name: str) -> str:
    return (resources.files("queue_service") / "static" / name).read_text(encoding="utf-8")


@functools.cache
def _template() -> str:
    """waiting.html as sent: without its whole-line script comments and indentation (2.6 KB
    of a page that must stay light on 2G; the file keeps them for whoever reads it)."""
    lines = _static("waiting.html").splitlines()
    return "\n".join(line.lstrip() for line in lines if not line.lstrip().startswith("//")) + "\n"


@functools.cache
def _callback_script() -> str:
    """static/waiting_callbacks.js as sent (like the template): only on a wave with call-backs,
    so a plain waiting page stays as light as it was."""
    lines = _static("waiting_callbacks.js").splitlines()
    return "\n".join(line.lstrip() for line in lines if not line.lstrip().startswith("//"))


CALLBACK_CSS = (
    "<style>h2{font-size:1.1rem;margin:0 0 8px}fieldset{border:0;margin:0 0 8px;padding:0}"
    ".cbk{display:inline-block;min-height:48px;margin-right:16px;padding-top:12px}"
    "#cb-address{display:block;width:100%;min-height:48px;margin:4px 0 8px;padding:8px;"
    "border:2px solid #8a97a6;border-radius:8px;font:inherit}</style>"
)


@functools.cache
def script_messages_json(callbacks: bool = False) -> str:
    """The texts the page's script uses, both languages (the server's own are left out; the
    call-back form's only on a wave that offers call-backs: a plain page stays light)."""
    table = {
        lang: {
            key: text
            for key, text in texts.items()
            if not key.startswith(SERVER_ONLY_PREFIXES)
            and key not in SERVER_ONLY_KEYS
            and (callbacks or not key.startswith(CALLBACK_PREFIX))
        }
        for lang, texts in messages().items()
    }
    return _script_json(table)


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


def token_expiry(token: str) -> float | None:
    """The `exp` claim of an admission token, read without verifying it: only to tell its own
    holder how long the session lasts (the script reads it the same way)."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, orjson.JSONDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return orjson.dumps(value).decode().replace("</", "<\\/").replace("<!--", "<\\!--")


def _number(value: int | None, lang: str) -> str:
    if value is None:
        return "—"
    return f"{value:,}".replace(",", "." if lang == "id" else ",")


class JoinForm(NamedTuple):
    """What the page's join button posts (no JavaScript): the registrant id from the link
    (`?registrant=`) or one drawn for this page, and the registration site's enqueue token."""

    registrant: str
    enqueue_token: str = ""


def _state_of(
    view: TicketView | None,
    info: dict[str, Any],
    config: WaveConfig | None,
    form: JoinForm | None,
    refused: str | None,
    busy: bool,
) -> str:
    if view is not None:
        return view["state"]
    if busy:
        return "busy"
    wave_state = info.get("state")
    if wave_state in ("closed", "full"):
        return str(wave_state)
    if wave_state == "scheduled":
        return "notyet"
    if refused is not None and refused != "wave_not_open_yet":  # it has opened since
        return REFUSED_STATES.get(refused, "error")
    if config is not None and form is not None:
        if config.verified_joins and not form.enqueue_token:
            return "verify"
        if config.pow_bits:
            return "needjs"  # the work is done by the script
        return "join"
    return "loading"


def _refresh_s(
    state: str, view: TicketView | None, info: dict[str, Any], now: float, busy_s: float | None
) -> int:
    """Seconds until a page without JavaScript loads itself again; 0 = never (nothing will
    change by waiting: a button to press, a link to follow, or the end)."""
    if view is not None and state in LIVE_STATES:
        seconds = view["poll_after_ms"] / 1000
    elif state == "busy" and busy_s is not None:
        seconds = math.ceil(busy_s)  # never before the limit lets the ticket be read
    elif state == "notyet":
        opens = datetime.fromisoformat(info["prequeue_opens_at"]).timestamp()
        seconds = opens - now + 1
    else:
        return 0
    return int(min(MAX_REFRESH_S, max(MIN_REFRESH_S, seconds)))


def _message(
    state: str, view: TicketView | None, info: dict[str, Any], lang: str, refused: str | None
) -> str:
    t = messages()[lang]
    if state == "join":
        return t["nojs_busy"] if refused == "busy" else t["nojs_join"]
    if state == "busy":
        return t["n_busy"]
    if state == "notyet":
        return t["nojs_notyet"].replace("{t}", local_time(info["prequeue_opens_at"], lang))
    if state == "prequeue":
        return t["nojs_prequeue"].replace("{t}", local_time(info["opens_at"], lang))
    if state == "closing" and view is not None:
        key = "m_closing_quota" if view.get("closing_reason") == "quota" else "m_closing_time"
        closes = view.get("closes_at")
        return t[key].replace("{t}", local_time(closes, lang) if closes else "")
    if state == "error":
        return t["m_error"].replace("{e}", refused or "")
    return t.get(f"m_{state}", t["m_loading"])


def _session_text(view: TicketView | None, lang: str, now: float) -> str:
    expires = token_expiry(view.get("token", "")) if view is not None else None
    if expires is None:
        return ""
    t = messages()[lang]
    left = eta_text(max(0.0, expires - now), lang)  # as the script writes it
    return t["m_session"].replace("{w}", left).replace("{t}", local_time(expires, lang))


def _trust_html(config: WaveConfig | None, state: str, t: dict[str, str]) -> str:
    """Who runs this queue, where to check it is the real one, and what to have ready: the
    wave's own words (operator_name, official_url, have_ready), shown as written."""
    parts = []
    if config is not None and config.operator_name:
        parts.append(
            f'<p><span data-i18n="operator">{html.escape(t["operator"])}</span>: '
            f"<strong>{html.escape(config.operator_name)}</strong></p>"
        )
    if config is not None and config.official_url:
        url = html.escape(config.official_url)
        shown = html.escape(config.official_url.split("://", 1)[-1].rstrip("/"))
        parts.append(
            f'<p><span data-i18n="official">{html.escape(t["official"])}</span>: '
            f'<a href="{url}" rel="noopener">{shown}</a></p>'
        )
    parts.append(f'<p data-i18n="official_check">{html.escape(t["official_check"])}</p>')
    if config is not None and config.have_ready:
        hidden = "" if state in SHOWS_HAVE_READY else " hidden"
        items = "".join(f"<li>{html.escape(item)}</li>" for item in config.have_ready)
        parts.append(
            f'<div id="ready"{hidden}><h2 data-i18n="have_ready">{html.escape(t["have_ready"])}'
            f"</h2><ul>{items}</ul></div>"
        )
    return "".join(parts)


def _nojs_actions_html(
    wave: str, state: str, view: TicketView | None, form: JoinForm | None, t: dict[str, str]
) -> str:
    """The page's buttons for a phone without JavaScript (inside <noscript>)."""
    if state == "admitted" and view is not None and view.get("redirect"):
        href = html.escape(view["redirect"])
        return f'<a class="btn go" href="{href}">{html.escape(t["go"])}</a>'
    if form is not None and state in ("join", "expired", "left"):
        label = t["join"] if state == "join" else t["retry"]
        fields = f'<input type="hidden" name="registrant" value="{html.escape(form.registrant)}">'
        if form.enqueue_token:
            token = html.escape(form.enqueue_token)
            fields += f'<input type="hidden" name="enqueue_token" value="{token}">'
        return (
            f'<form method="post" action="/w/{html.escape(wave)}">{fields}'
            f'<button class="btn primary" type="submit">{html.escape(label)}</button></form>'
        )
    return ""


CALLBACK_REFUSALS = frozenset(
    {"invalid_contact", "channel_not_offered", "not_waiting", "too_many_contact_changes",
     "callbacks_off", "missing_ticket", "invalid_ticket", "unknown_ticket"}
)  # fmt: skip
"""A call-back form's refusal (`?refused=<code>`): said in the call-back box."""


def _callback_html(
    wave: str,
    config: WaveConfig,
    state: str,
    view: TicketView | None,
    kind: str | None,
    refused: str | None,
    lang: str,
) -> str:
    """The call-back box: a form that works without JavaScript (a plain post to
    /w/{wave}/notify), or, once opted in, what will happen. Shown while the holder waits."""
    t = messages()[lang]
    notify = config.notify
    hidden = "" if view is not None and state in LIVE_STATES else " hidden"
    kinds = [k for k in notify.channels if k != "webpush"]
    done = (
        t["cb_done"]
        .replace("{kind}", t.get(f"cb_kind_{kind}", kind or ""))
        .replace("{w}", eta_text(notify.return_window_s, lang))
    )
    radios = "".join(
        f'<label class="cbk"><input type="radio" name="kind" value="{k}"'
        f'{" checked" if i == 0 else ""}> <span data-i18n="cb_kind_{k}">'
        f"{html.escape(t[f'cb_kind_{k}'])}</span></label>"
        for i, k in enumerate(kinds)
    )
    error = ""
    if refused in CALLBACK_REFUSALS:
        error = t["cb_failed"].replace("{e}", t["cb_check"])
    form = ""
    if kinds:
        form = (
            f'<form id="cb-form" method="post" action="/w/{html.escape(wave)}/notify"'
            f'{" hidden" if kind else ""}><fieldset><legend data-i18n="cb_kind">'
            f"{html.escape(t['cb_kind'])}</legend>{radios}</fieldset>"
            f'<label for="cb-address" data-i18n="cb_address">{html.escape(t["cb_address"])}'
            '</label><input id="cb-address" name="address" type="text" inputmode="email" '
            'autocomplete="tel" maxlength="254" required>'
            f'<input type="hidden" name="language" value="{lang}">'
            f'<button class="btn primary" type="submit" data-i18n="cb_submit">'
            f"{html.escape(t['cb_submit'])}</button></form>"
        )
    intro = t["cb_intro"].replace("{lead}", eta_text(notify.lead_s, lang))
    return (
        f'<section id="callback" class="card" data-kind="{html.escape(kind or "")}"{hidden}>'
        f'<h2 data-i18n="cb_title">{html.escape(t["cb_title"])}</h2>'
        f'<p id="cb-intro"{" hidden" if kind else ""}>{html.escape(intro)}</p>{form}'
        '<button id="cb-push" class="btn" type="button" hidden data-i18n="cb_push">'
        f"{html.escape(t['cb_push'])}</button>"
        f'<p id="cb-done" class="msg"{"" if kind else " hidden"}>{html.escape(done)}</p>'
        f'<p id="cb-error" class="net">{html.escape(error)}</p>'
        f'<p class="small" data-i18n="cb_privacy">{html.escape(t["cb_privacy"])}</p></section>'
    )


def render(
    wave: str,
    info: dict[str, Any],
    view: TicketView | None,
    lang: str,
    *,
    config: WaveConfig | None = None,
    form: JoinForm | None = None,
    refused: str | None = None,
    busy_s: float | None = None,
    now: float | None = None,
    callback_kind: str | None = None,
) -> str:
    """The page for `view` (the holder's ticket; None: no ticket). `callback_kind`: the
    holder opted in to be called back by it (call-backs). `form`: offer the join
    button to a holder without a ticket; `refused`: what a form join was refused with;
    `busy_s`: the holder's ticket could not be read now (reloaded faster than its rate
    limit): their place is safe, the page looks again after this many seconds."""
    t = messages()[lang]
    now = time.time() if now is None else now
    state = _state_of(view, info, config, form, refused, busy_s is not None)
    in_line = view is not None and state in ("waiting", "closing", "paused")
    message = _message(state, view, info, lang, refused)
    if state == "admitted":
        message = f"{t['nojs_admitted']} {_session_text(view, lang, now)}".strip()
    refresh = _refresh_s(state, view, info, now, busy_s)
    nojs_notice = t["nojs_notice"]
    if refresh:
        nojs_notice += " " + t["nojs_refresh"].replace("{w}", eta_text(refresh, lang))
    title = info.get("title") or wave
    eta = "—"
    if in_line and view is not None:
        eta = t["eta_paused"] if state == "paused" else eta_text(view["eta_s"], lang)
    tip = (
        t["tip"]
        if (state in LIVE_STATES and not callback_kind) or state == "busy"
        else t["tip_done"]
        if state in DONE_STATES
        else ""
    )
    offers_callbacks = config is not None and config.notify.enabled
    values = {
        "lang": lang,
        "doc_title": f"{t['title']} · {title}",
        "refresh_html": f'<meta http-equiv="refresh" content="{refresh}">' if refresh else "",
        "brand": config.operator_name if config is not None and config.operator_name else BRAND,
        "lang_label": t["lang_label"],
        "lang_btn": t["lang_btn"],
        "nojs_notice": nojs_notice,
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
        "nojs_actions_html": _nojs_actions_html(wave, state, view, form, t),
        # without a script, a page with no place to show leads with what to do
        "card_class": "" if in_line else "noplace",
        "t_updated": t["updated"],
        "updated": clock_time(now, lang),
        "tip": tip,
        "trust_html": _trust_html(config, state, t),
        "callback_html": _callback_html(wave, config, state, view, callback_kind, refused, lang)
        if offers_callbacks and config is not None
        else "",
        "callback_css_html": CALLBACK_CSS if offers_callbacks else "",
    }

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return values[name] if name.endswith("_html") else html.escape(values[name])

    page = PLACEHOLDER.sub(fill, _template())
    return (
        page.replace("__WAVE_ID_JSON__", _script_json(wave))
        .replace("__MESSAGES_JSON__", script_messages_json(offers_callbacks))
        .replace("__CALLBACK_JS__", _callback_script() if offers_callbacks else "")
        .replace("__INITIAL_JSON__", _script_json(view))
        .replace("__INFO_JSON__", _script_json(info))
    )


def etag(body: str) -> str:
    return 'W/"' + hashlib.blake2b(body.encode(), digest_size=12).hexdigest() + '"'


# -- the pages that stand in for the waiting page ----------------------------------------------

SMALL_PAGE = """<!doctype html>
<html lang="id"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">
{refresh}<title>{title}</title>
<style>body{{margin:0;padding:16px;background:#eef1f5;color:#16202b;font:16px/1.5 system-ui,\
sans-serif}}main{{max-width:30rem;margin:0 auto;background:#fff;border-radius:12px;\
padding:16px}}h1{{font-size:1.2rem;margin:0 0 8px}}p{{margin:0 0 12px}}\
[lang=en]{{color:#3d4a57}}</style></head>
<body><main>{body}</main>{script}</body></html>
"""
SHED_RELOAD_SCRIPT = (
    "<script>setTimeout(function(){{location.replace(location.pathname+location.search)}},"
    "({retry}+Math.random()*{retry})*1000);</script>"
)
"""Back to the same page after Retry-After, plus up to as long again at random: a crowd that
was refused together does not return together. Without JavaScript the meta refresh does it."""

PAGE_SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
    "frame-ancestors 'none'",
}
SHED_PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Retry-After": str(SHED_RETRY_AFTER_S),
    **PAGE_SECURITY_HEADERS,
}
"""The headers that go with `shed_page_bytes()` (status 503)."""


def _both_languages(key_title: str, key_text: str) -> tuple[str, str]:
    """(title, body) in Indonesian, then English."""
    table = messages()
    title = f"{table['id'][key_title]} · {table['en'][key_title]}"
    body = "".join(
        f'<section lang="{lang}"><h1>{html.escape(table[lang][key_title])}</h1>'
        f"<p>{html.escape(table[lang][key_text])}</p></section>"
        for lang in ("id", "en")
    )
    return title, body


@functools.cache
def shed_page_bytes(retry_after_s: int = SHED_RETRY_AFTER_S) -> bytes:
    """The waiting page's stand-in while the process sheds load or cannot reach Redis (status
    503 with `SHED_PAGE_HEADERS`): built once, about a kilobyte, both languages; it says the
    place is safe and comes back by itself after `retry_after_s` (and a random moment more)."""
    title, body = _both_languages("busy_title", "busy_message")
    return SMALL_PAGE.format(
        refresh=f'<noscript><meta http-equiv="refresh" content="{retry_after_s}"></noscript>',
        title=html.escape(title),
        body=body,
        script=SHED_RELOAD_SCRIPT.format(retry=retry_after_s),
    ).encode()


@functools.cache
def not_found_page_bytes() -> bytes:
    """The page for a wave that does not exist (404): both languages, check the link."""
    table = messages()
    title, _ = _both_languages("s_unknown", "m_unknown")
    body = "".join(
        f'<section lang="{lang}"><h1>{html.escape(table[lang]["s_unknown"])}</h1>'
        f"<p>{html.escape(table[lang]['m_unknown'])}</p>"
        f"<p>{html.escape(table[lang]['official_check'])}</p></section>"
        for lang in ("id", "en")
    )
    return SMALL_PAGE.format(refresh="", title=html.escape(title), body=body, script="").encode()
