"""Call-back routes (docs/callbacks.md): thin, they parse and answer; callbacks.py decides.

- `POST /api/v1/waves/{wave}/notify`: opt in with the ticket (cookie, header or `?ticket=`).
- `POST /w/{wave}/notify`: the same from the waiting page's form, without JavaScript.
- `GET /w/{wave}/return?code=`: the return link. It only shows a button: link scanners and
  chat apps fetch links to preview them, and a single-use link must not be spent by a robot.
- `POST /w/{wave}/return`: the button: the code is used, the ticket's cookies are set on this
  browser, and the page opens. `POST /api/v1/waves/{wave}/return` does it for an app (JSON).
- `GET /push-sw.js`: the service worker that shows a Web Push message.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from aiohttp import web

from queue_service.callbacks import Return
from queue_service.errors import ApiError, BadRequest, NotFound, StoreUnavailable
from queue_service.http.appkeys import CALLBACKS, SERVICE
from queue_service.http.public import (
    NO_STORE,
    _see_other,
    _set_ticket_cookies,
    _ticket,
    _wave,
    json_response,
    page_not_found,
    page_unavailable,
    read_form,
    read_json_object,
)
from queue_service.http.waiting_page import PAGE_SECURITY_HEADERS, SMALL_PAGE, language
from queue_service.texts import messages

CALLBACK_COOKIE = "gelombang_callback"
"""The kind of contact a holder opted in with (never the contact): the page says "you may
close this page" from it, with or without JavaScript."""
CALLBACK_COOKIE_MAX_AGE_S = 7 * 24 * 3600


def _set_callback_cookie(response: web.StreamResponse, wave: str, kind: str) -> None:
    for path in (f"/api/v1/waves/{wave}", f"/w/{wave}"):
        response.headers.add(
            "Set-Cookie",
            f"{CALLBACK_COOKIE}={kind}; Max-Age={CALLBACK_COOKIE_MAX_AGE_S}; Path={path}; "
            "SameSite=Lax",
        )


async def _opt_in(request: web.Request, wave: str, ticket_text: str, body: dict[str, Any]) -> Any:
    service = request.app[SERVICE]
    runtime = await service.registry.get(wave)
    ticket = service.codec.check(wave, runtime.uid, ticket_text)
    return await request.app[CALLBACKS].opt_in(runtime, ticket, body)


async def notify(request: web.Request) -> web.Response:
    wave = _wave(request)
    ticket_text = _ticket(request)
    body = await read_json_object(request)
    result = await _opt_in(request, wave, ticket_text, body)
    response = json_response(result.view, status=201 if result.created else 200, headers=NO_STORE)
    _set_callback_cookie(response, wave, result.view["callback"]["kind"])
    return response


async def page_notify(request: web.Request) -> web.Response:
    """The waiting page's call-back form, posted without JavaScript: back to the page, which
    then says what was kept (or, in `?refused=`, why not)."""
    try:
        wave = _wave(request)
        await request.app[SERVICE].registry.get(wave)
    except (NotFound, BadRequest):
        return page_not_found()
    except StoreUnavailable as exc:
        return page_unavailable(exc)
    form = await read_form(request)
    page = f"/w/{wave}"
    ticket_text = request.cookies.get("gelombang_ticket")
    if not ticket_text:
        return _see_other(f"{page}?refused=missing_ticket")
    body = {
        "contact": {"kind": form.get("kind", ""), "address": form.get("address", "")},
        "language": form.get("language") or language(request.headers.get("Accept-Language", "")),
    }
    try:
        result = await _opt_in(request, wave, ticket_text, body)
    except StoreUnavailable as exc:
        return page_unavailable(exc)
    except ApiError as exc:
        return _see_other(f"{page}?refused={quote(exc.code)}")
    response = _see_other(page)
    _set_callback_cookie(response, wave, result.view["callback"]["kind"])
    return response


def _return_page(
    status: int, lang: str, title_key: str, text_key: str, form_html: str = ""
) -> web.Response:
    t = messages()[lang]
    body = (
        f'<section lang="{lang}"><h1>{html.escape(t[title_key])}</h1>'
        f"<p>{html.escape(t[text_key])}</p>{form_html}</section>"
    )
    page = SMALL_PAGE.format(refresh="", title=html.escape(t[title_key]), body=body, script="")
    headers = {"Cache-Control": "no-store", **PAGE_SECURITY_HEADERS}
    return web.Response(
        status=status, text=page, content_type="text/html", charset="utf-8", headers=headers
    )


async def return_page(request: web.Request) -> web.Response:
    """The link in the message: a button that uses it (a preview that fetches it spends
    nothing). The code goes on in the form, never into a log line or a Referer (the pages say
    no-referrer)."""
    lang = language(request.headers.get("Accept-Language", ""))
    try:
        wave = _wave(request)
    except BadRequest:
        return page_not_found()
    code = request.query.get("code", "")
    form = (
        f'<form method="post" action="/w/{html.escape(wave)}/return">'
        f'<input type="hidden" name="code" value="{html.escape(code)}">'
        '<button type="submit" style="min-height:48px;width:100%;font:inherit;font-weight:600">'
        f"{html.escape(messages()[lang]['cbr_button'])}</button></form>"
    )
    return _return_page(200, lang, "cbr_title", "cbr_text", form)


async def _come_back(request: web.Request, wave: str, code: str) -> tuple[Return, str]:
    service = request.app[SERVICE]
    runtime = await service.registry.get(wave)
    back = await request.app[CALLBACKS].come_back(runtime, code)
    return back, service.codec.encode(wave, runtime.uid, back.ticket)


async def page_return(request: web.Request) -> web.Response:
    lang = language(request.headers.get("Accept-Language", ""))
    try:
        wave = _wave(request)
        await request.app[SERVICE].registry.get(wave)
    except (NotFound, BadRequest):
        return page_not_found()
    except StoreUnavailable as exc:
        return page_unavailable(exc)
    form = await read_form(request)
    try:
        _, ticket_text = await _come_back(request, wave, form.get("code", ""))
    except StoreUnavailable as exc:
        return page_unavailable(exc)
    except ApiError:
        return _return_page(409, lang, "cbr_title", "cbr_used")
    response = _see_other(f"/w/{wave}")
    _set_ticket_cookies(request, response, wave, ticket_text)
    return response


async def api_return(request: web.Request) -> web.Response:
    wave = _wave(request)
    body = await read_json_object(request)
    code = body.get("code")
    if not isinstance(code, str):
        raise BadRequest(
            'Send the return link\'s code as {"code": ...}.', code="invalid_return_link"
        )
    back, ticket_text = await _come_back(request, wave, code)
    response = json_response(
        {"wave": wave, "result": back.result, "ticket": ticket_text}, headers=NO_STORE
    )
    _set_ticket_cookies(request, response, wave, ticket_text)
    return response


PUSH_WORKER = """'use strict';
// Gelombang: shows a call-back message sent by Web Push, and opens its link when tapped.
self.addEventListener('push', function (event) {
  var data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = {}; }
  event.waitUntil(self.registration.showNotification(data.title || 'Gelombang', {
    body: data.body || '', data: { url: data.url || '/' }, requireInteraction: true
  }));
});
self.addEventListener('notificationclick', function (event) {
  event.notification.close();
  event.waitUntil(clients.openWindow(event.notification.data.url));
});
"""


async def push_worker(request: web.Request) -> web.Response:
    return web.Response(
        text=PUSH_WORKER,
        content_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600", "Service-Worker-Allowed": "/"},
    )
