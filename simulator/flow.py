"""The registration flow at the sample origin, as seen from the registrant's side.

The flow is a pure description (`STEPS`: method, path, body builder, accepted statuses, what to
remember from the answer) so the live driver and the Locust scenarios run the same requests;
`run_step` executes one step with aiohttp. Locust builds the same request from
`step.build(ctx)` (`RequestSpec.json`, or `upload.fields` as `data=` and
`upload.requests_files()` as `files=` for the KTP form), accepts `step.ok` statuses and calls
`step.remember(ctx, response_json)` so the next step has the account id and OTP code.

    ctx = FlowContext(registrant, photo=pick_photo(rng))
    for step in STEPS:
        result = await run_step(session, origin_url, step, ctx, token=token)
"""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import aiohttp
import orjson

from simulator.registrants import Registrant

MAX_PHOTO_BYTES = 2 * 1024 * 1024
OVERSIZED_PHOTO_SHARE = 0.12  # "KTP photo > 2 MB or rejected on first try: 10-15%" [E]


# ----------------------------------------------------------------------------- KTP photos


def png_bytes(width: int, height: int, rng: random.Random) -> bytes:
    """A real PNG (8-bit greyscale noise): noise does not compress, so size ≈ width × height."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + rng.randbytes(width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )


@cache
def photo_pool(size: int = 8) -> tuple[bytes, ...]:
    """A few phone-camera-sized KTP photos (about 40-160 KB), made once and shared by every
    simulated registrant so thousands of them cost no memory."""
    rng = random.Random(2020)
    return tuple(png_bytes(320 + 40 * i, 120 + 40 * i, rng) for i in range(size))


@cache
def oversized_photo() -> bytes:
    """A straight-from-the-camera photo just over the 2 MB limit."""
    return png_bytes(1600, 1400, random.Random(2021))


def pick_photo(rng: random.Random, oversized_share: float = OVERSIZED_PHOTO_SHARE) -> bytes:
    if rng.random() < oversized_share:
        return oversized_photo()
    pool = photo_pool()
    return pool[rng.randrange(len(pool))]


# ----------------------------------------------------------------------------- the steps


@dataclass
class FlowContext:
    """One registrant's progress through the flow: what the origin told them so far."""

    registrant: Registrant
    photo: bytes
    account_id: str | None = None
    otp_code: str | None = None

    def resize_photo(self) -> None:
        """After a 413 the registrant shrinks the photo and tries again."""
        pool = photo_pool()
        self.photo = pool[self.registrant.index % len(pool)]


@dataclass(frozen=True)
class Upload:
    """A multipart form: text fields and one file."""

    fields: Mapping[str, str]
    file_field: str
    filename: str
    content: bytes
    content_type: str

    def form_data(self) -> aiohttp.FormData:
        form = aiohttp.FormData()
        for name, value in self.fields.items():
            form.add_field(name, value)
        # A BytesIO, not raw bytes: aiohttp refuses (warns on) large raw-bytes bodies.
        form.add_field(
            self.file_field,
            io.BytesIO(self.content),
            filename=self.filename,
            content_type=self.content_type,
        )
        return form

    def requests_files(self) -> dict[str, tuple[str, bytes, str]]:
        """`files=` for `requests`/Locust (`data=` is `fields`)."""
        return {self.file_field: (self.filename, self.content, self.content_type)}


@dataclass(frozen=True)
class RequestSpec:
    method: str
    path: str
    json: dict[str, Any] | None = None
    upload: Upload | None = None


@dataclass(frozen=True)
class Step:
    name: str  # the origin's metric step: account, ktp, otp_send, otp_verify, join
    build: Callable[[FlowContext], RequestSpec]
    ok: frozenset[int]
    remember: Callable[[FlowContext, dict[str, Any]], None] = lambda ctx, body: None


def _account_path(ctx: FlowContext, tail: str) -> str:
    if ctx.account_id is None:
        raise RuntimeError("the account step must succeed before the later steps")
    return f"/api/v1/accounts/{ctx.account_id}/{tail}"


def _remember_account(ctx: FlowContext, body: dict[str, Any]) -> None:
    ctx.account_id = str(body["account_id"])


def _remember_code(ctx: FlowContext, body: dict[str, Any]) -> None:
    ctx.otp_code = str(body["simulated_sms_code"])


def _account(ctx: FlowContext) -> RequestSpec:
    r = ctx.registrant
    return RequestSpec(
        "POST", "/api/v1/accounts", json={"email": r.email, "phone": r.phone, "name": r.name}
    )


def _ktp(ctx: FlowContext) -> RequestSpec:
    r = ctx.registrant
    upload = Upload(
        fields={"nik": r.nik, "kk": r.kk},
        file_field="photo",
        filename="ktp.png",
        content=ctx.photo,
        content_type="image/png",
    )
    return RequestSpec("POST", _account_path(ctx, "ktp"), upload=upload)


def _otp_send(ctx: FlowContext) -> RequestSpec:
    return RequestSpec("POST", _account_path(ctx, "otp/send"))


def _otp_verify(ctx: FlowContext) -> RequestSpec:
    return RequestSpec("POST", _account_path(ctx, "otp/verify"), json={"code": ctx.otp_code})


def _join(ctx: FlowContext) -> RequestSpec:
    return RequestSpec("POST", _account_path(ctx, "join"))


STEPS: tuple[Step, ...] = (
    Step("account", _account, frozenset({200, 201}), _remember_account),
    Step("ktp", _ktp, frozenset({200})),
    Step("otp_send", _otp_send, frozenset({202}), _remember_code),
    Step("otp_verify", _otp_verify, frozenset({200})),
    Step("join", _join, frozenset({200, 201})),
)


# ----------------------------------------------------------------------------- execution


@dataclass
class StepResult:
    step: str
    status: int | None  # None: no answer (timeout or connection error)
    elapsed_s: float
    body: dict[str, Any] = field(default_factory=dict)
    retry_after_s: float | None = None
    failure: str | None = None  # None (ok), "overload" (5xx), "timeout", "refused" (4xx)

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error")
        return str(error.get("code")) if isinstance(error, dict) else None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def run_step(
    session: aiohttp.ClientSession,
    origin_url: str,
    step: Step,
    ctx: FlowContext,
    *,
    token: str | None = None,
    timeout_s: float = 30.0,
) -> StepResult:
    """Send one step; remember what the answer taught (account id, OTP code) when it is ok.
    Never raises for HTTP trouble: a lost answer is `failure="timeout"`."""
    spec = step.build(ctx)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs: dict[str, Any] = {"headers": headers, "timeout": aiohttp.ClientTimeout(timeout_s)}
    if spec.upload is not None:
        kwargs["data"] = spec.upload.form_data()
    elif spec.json is not None:
        kwargs["data"] = orjson.dumps(spec.json)
        headers["Content-Type"] = "application/json"
    started = time.monotonic()
    try:
        async with session.request(spec.method, origin_url + spec.path, **kwargs) as response:
            raw = await response.read()
            status = response.status
            retry_after = _retry_after(response.headers)
    except (TimeoutError, aiohttp.ClientError) as exc:
        # An early 413 may reset the connection while the body is still being sent.
        failure = "refused" if spec.upload is not None and _is_reset(exc) else "timeout"
        return StepResult(step.name, None, time.monotonic() - started, failure=failure)
    elapsed = time.monotonic() - started
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status in step.ok:
        step.remember(ctx, body)
        return StepResult(step.name, status, elapsed, body, retry_after)
    failure = "overload" if status >= 500 else "refused"
    return StepResult(step.name, status, elapsed, body, retry_after, failure)


def _is_reset(exc: BaseException) -> bool:
    return isinstance(exc, aiohttp.ClientOSError | aiohttp.ServerDisconnectedError)
