"""Sending a `simulator.client.Request` with aiohttp: the live driver's one way to talk HTTP.

    answer = await send(session, base_url, request, timeout_s=10.0)

Never raises for HTTP trouble: no answer in time, a refused or reset connection is an `Answer`
with status None (`reset` when an upload was cut off, as a server refusing it early does).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from simulator.client import Answer, Request, Upload, parse_answer


def form_data(upload: Upload) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in upload.fields.items():
        form.add_field(name, value)
    form.add_field(
        upload.file_field,
        upload.file_object(),
        filename=upload.filename,
        content_type=upload.content_type,
    )
    return form


async def send(
    session: aiohttp.ClientSession,
    base_url: str,
    request: Request,
    *,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """`headers`: added to the request's own (the executor's, e.g. a client address)."""
    sent_headers = {**request.headers, **(headers or {})}
    kwargs: dict[str, Any] = {
        "headers": sent_headers,
        "timeout": aiohttp.ClientTimeout(timeout_s),
    }
    if request.upload is not None:
        kwargs["data"] = form_data(request.upload)
    elif request.json is not None:
        kwargs["data"] = orjson.dumps(request.json)
        sent_headers["Content-Type"] = "application/json"
    started = time.monotonic()
    try:
        async with session.request(request.method, base_url + request.path, **kwargs) as response:
            content = await response.read()
            status = response.status
            retry_after = response.headers.get("Retry-After")
            policy = response.headers.get("RateLimit-Policy")
    except (TimeoutError, aiohttp.ClientError) as exc:
        reset = request.upload is not None and isinstance(
            exc, aiohttp.ClientOSError | aiohttp.ServerDisconnectedError
        )
        return Answer(None, {}, elapsed_s=time.monotonic() - started, reset=reset)
    elapsed = time.monotonic() - started
    return parse_answer(status, content, retry_after, elapsed_s=elapsed, rate_limit_policy=policy)
