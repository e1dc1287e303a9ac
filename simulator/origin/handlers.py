"""HTTP handlers of the Prakerja-like registration flow.

Each step holds one worker of the capacity model while it reads its input and does its work,
as a real server's worker thread would; validation failures still cost that work.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

import orjson
from aiohttp import BodyPartReader, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from simulator.origin.state import ORIGIN, Origin
from simulator.origin.validation import InvalidSubmission, check_identity, photo_kind

# Room for the multipart framing and the text fields around the photo.
FORM_OVERHEAD_BYTES = 16 * 1024
MAX_JSON_BYTES = 16 * 1024
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[A-Za-z]{2,24}$")
PHONE_RE = re.compile(r"^\+628\d{7,11}$")


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def _read_json(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise InvalidSubmission("body_too_large", "The request body is too large.", 413)
    # `read(n)` returns what has arrived so far, not n bytes: read to the end of the body.
    raw = bytearray()
    while chunk := await request.content.read(MAX_JSON_BYTES + 1 - len(raw)):
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise InvalidSubmission("body_too_large", "The request body is too large.", 413)
    body = orjson.loads(bytes(raw) or b"{}")
    if not isinstance(body, dict):
        raise InvalidSubmission("invalid_json", "The body must be a JSON object.")
    return body


def _text_field(body: dict[str, Any], name: str, max_len: int = 200) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise InvalidSubmission(f"invalid_{name}", f"`{name}` must be a non-empty string.")
    return value.strip()


async def create_account(request: web.Request) -> web.Response:
    origin = request.app[ORIGIN]
    async with origin.capacity.worker():
        body = await _read_json(request)
        await _work(origin, "account")
        email = _text_field(body, "email")
        phone = _text_field(body, "phone")
        name = _text_field(body, "name")
        if not EMAIL_RE.match(email):
            raise InvalidSubmission("invalid_email", "The e-mail address is not valid.")
        if not PHONE_RE.match(phone):
            raise InvalidSubmission("invalid_phone", "The phone number must look like +628….")
        account, created = origin.store.create_account(email=email, phone=phone, name=name)
    return _json(201 if created else 200, {"account_id": account.account_id})


async def check_ktp(request: web.Request) -> web.Response:
    origin = request.app[ORIGIN]
    limit = origin.config.max_upload_bytes
    # Refused before a byte of the body is read: a 3 MB photo costs nothing but the headers.
    if request.content_length is not None and request.content_length > limit + FORM_OVERHEAD_BYTES:
        raise InvalidSubmission(
            "photo_too_large", f"The KTP photo must be at most {limit // (1024 * 1024)} MB.", 413
        )
    account = origin.store.account(request.match_info["account_id"])
    async with origin.capacity.worker():
        try:
            fields, photo = await _read_ktp_form(request, limit)
        except ValueError as exc:  # aiohttp's multipart parser on a malformed body
            raise InvalidSubmission("bad_form", f"The form could not be read: {exc}.") from None
        await _work(origin, "ktp")
        if photo is None:
            raise InvalidSubmission("photo_missing", "Attach a photo of the KTP as `photo`.")
        if photo_kind(photo[:8]) is None:
            raise InvalidSubmission(
                "photo_type", "The KTP photo must be a JPEG or PNG image.", status=415
            )
        birth = check_identity(
            fields.get("nik", ""),
            fields.get("kk", ""),
            today=origin.today(),
            min_age=origin.config.min_age,
        )
        origin.store.record_ktp(account, fields["nik"])
    return _json(200, {"account_id": account.account_id, "birth_date": birth.isoformat()})


async def _read_ktp_form(request: web.Request, limit: int) -> tuple[dict[str, str], bytes | None]:
    if not request.content_type.startswith("multipart/"):
        raise InvalidSubmission("multipart_required", "Send the KTP as multipart/form-data.")
    fields: dict[str, str] = {}
    photo: bytes | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise InvalidSubmission("bad_form", "Nested multipart bodies are not accepted.")
        if part.name == "photo":
            photo = await _read_limited(part, limit)
        elif part.name in ("nik", "kk"):
            fields[part.name] = (await _read_limited(part, 64)).decode("ascii", "replace")
        else:
            await part.release()
    return fields, photo


async def _read_limited(part: BodyPartReader, limit: int) -> bytes:
    """Read one form part, refusing (413) as soon as it passes `limit` bytes: chunked uploads
    carry no Content-Length to check up front."""
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise InvalidSubmission("photo_too_large", "The upload is too large.", 413)
    return bytes(data)


async def send_otp(request: web.Request) -> web.Response:
    origin = request.app[ORIGIN]
    account = origin.store.account(request.match_info["account_id"])
    async with origin.capacity.worker():
        await _work(origin, "otp_send")
        code = origin.store.send_otp(account, origin.clock())
    # A sample server has no SMS gateway: the code comes back in the answer, marked as such,
    # so simulated registrants can "read their SMS".
    return _json(202, {"sent": True, "simulated_sms_code": code, "sends": account.otp.sends})


async def verify_otp(request: web.Request) -> web.Response:
    origin = request.app[ORIGIN]
    account = origin.store.account(request.match_info["account_id"])
    async with origin.capacity.worker():
        body = await _read_json(request)
        await _work(origin, "otp_verify")
        origin.store.verify_otp(account, _text_field(body, "code", max_len=12))
    return _json(200, {"verified": True})


async def join_wave(request: web.Request) -> web.Response:
    origin = request.app[ORIGIN]
    account = origin.store.account(request.match_info["account_id"])
    async with origin.capacity.worker():
        await _work(origin, "join")
        wave = origin.config.wave or "default"
        first_time = origin.store.join_wave(account, wave)
    if first_time:
        origin.metrics.completed.inc()
    return _json(201 if first_time else 200, {"account_id": account.account_id, "wave": wave})


async def show_account(request: web.Request) -> web.Response:
    origin = request.app[ORIGIN]
    account = origin.store.account(request.match_info["account_id"])
    async with origin.capacity.worker():
        await _work(origin, "other")
    return _json(
        200,
        {
            "account_id": account.account_id,
            "ktp_verified": account.ktp_verified,
            "phone_verified": account.otp.verified,
            "joined_wave": account.joined_wave,
        },
    )


async def landing(request: web.Request) -> web.Response:
    origin = request.app[ORIGIN]
    async with origin.capacity.worker():
        await _work(origin, "other")
    return web.Response(
        text="<!doctype html><title>Pendaftaran</title><h1>Pendaftaran gelombang</h1>",
        content_type="text/html",
    )


async def set_capacity(request: web.Request) -> web.Response:
    """`PUT /api/v1/admin/capacity {"capacity": n}` with the origin's admin token: serve `n`
    requests at once from now on (a rehearsal of an origin that loses capacity mid-wave)."""
    origin = request.app[ORIGIN]
    expected = origin.config.admin_token
    if not expected:
        raise InvalidSubmission("admin_disabled", "The origin's admin API is disabled.", 403)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        raise InvalidSubmission("invalid_admin_token", "A valid admin token is required.", 401)
    body = await _read_json(request)
    capacity = body.get("capacity")
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= 10**6:
        raise InvalidSubmission("invalid_capacity", "capacity must be a whole number >= 1.", 400)
    await origin.set_capacity(capacity)
    return _json(200, {"capacity": capacity})


async def healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    origin = request.app[ORIGIN]
    response = web.Response(body=generate_latest(origin.metrics.registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


async def _work(origin: Origin, step: str) -> None:
    """The step's service time on the held worker, longer when the origin is congested."""
    await origin.capacity.work(step)
