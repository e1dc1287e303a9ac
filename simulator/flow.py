"""The registration flow at the sample origin, as seen from the registrant's side, with no I/O.

`STEPS` describe it: each step builds its request (`simulator.client.Request`, to the origin,
with the admission token when there is one), says which statuses are a success, what to
remember from the answer (the account id, the OTP code) and how any other answer reads
(`Step.judge`). The registrant's journey (`simulator.journey`) walks them, and every executor
(the live driver, the Locust users) sends what it is given:

    ctx = FlowContext(registrant, photo=pick_photo(rng), token=token)
    request = STEPS[0].build(ctx)      # send it, then:
    STEPS[0].judge(answer)             # ok, refused, timeout or overload
    STEPS[0].remember(ctx, answer.body)
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any

from simulator.client import ORIGIN, Answer, Request, Upload
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
    token: str | None = None
    """The admission token every request carries (None: no waiting room in front)."""
    account_id: str | None = None
    otp_code: str | None = None

    def resize_photo(self) -> None:
        """After a 413 the registrant shrinks the photo and tries again."""
        pool = photo_pool()
        self.photo = pool[self.registrant.index % len(pool)]


class StepOutcome(Enum):
    OK = "ok"
    REFUSED = "refused"
    """A 4xx (the origin's business answer: bad NIK, under age, photo too large, rate
    limited), or an upload refused by a reset before it was read."""
    TIMEOUT = "timeout"
    """No answer in time, or a 504 (the origin's gateway gave up waiting for a worker)."""
    OVERLOAD = "overload"
    """Any other 5xx (the origin shedding load)."""


@dataclass(frozen=True)
class Step:
    name: str  # the origin's metric step: account, ktp, otp_send, otp_verify, join
    request: Callable[[FlowContext], Request]
    ok: frozenset[int]
    remember: Callable[[FlowContext, dict[str, Any]], None] = lambda ctx, body: None

    def build(self, ctx: FlowContext) -> Request:
        request = self.request(ctx)
        if ctx.token:
            request = request.with_headers(Authorization=f"Bearer {ctx.token}")
        return request

    def judge(self, answer: Answer) -> StepOutcome:
        status = answer.status
        if status in self.ok:
            return StepOutcome.OK
        if status is None:
            # an early 413 may reset the connection while the photo is still being sent
            return StepOutcome.REFUSED if answer.reset else StepOutcome.TIMEOUT
        if status == 504:
            return StepOutcome.TIMEOUT
        return StepOutcome.OVERLOAD if status >= 500 else StepOutcome.REFUSED


def _account_path(ctx: FlowContext, tail: str) -> str:
    if ctx.account_id is None:
        raise RuntimeError("the account step must succeed before the later steps")
    return f"/api/v1/accounts/{ctx.account_id}/{tail}"


def _remember_account(ctx: FlowContext, body: dict[str, Any]) -> None:
    ctx.account_id = str(body["account_id"])


def _remember_code(ctx: FlowContext, body: dict[str, Any]) -> None:
    ctx.otp_code = str(body["simulated_sms_code"])


def _post(path: str, step: str, json: dict[str, Any] | None = None) -> Request:
    return Request(ORIGIN, "POST", path, f"origin {step}", json=json)


def _account(ctx: FlowContext) -> Request:
    r = ctx.registrant
    return _post(
        "/api/v1/accounts", "account", {"email": r.email, "phone": r.phone, "name": r.name}
    )


def _ktp(ctx: FlowContext) -> Request:
    r = ctx.registrant
    upload = Upload(
        fields={"nik": r.nik, "kk": r.kk},
        file_field="photo",
        filename="ktp.png",
        content=ctx.photo,
        content_type="image/png",
    )
    return Request(ORIGIN, "POST", _account_path(ctx, "ktp"), "origin ktp", upload=upload)


def _otp_send(ctx: FlowContext) -> Request:
    return _post(_account_path(ctx, "otp/send"), "otp_send")


def _otp_verify(ctx: FlowContext) -> Request:
    return _post(_account_path(ctx, "otp/verify"), "otp_verify", {"code": ctx.otp_code})


def _join(ctx: FlowContext) -> Request:
    return _post(_account_path(ctx, "join"), "join")


STEPS: tuple[Step, ...] = (
    Step("account", _account, frozenset({200, 201}), _remember_account),
    Step("ktp", _ktp, frozenset({200})),
    Step("otp_send", _otp_send, frozenset({202}), _remember_code),
    Step("otp_verify", _otp_verify, frozenset({200})),
    Step("join", _join, frozenset({200, 201})),
)
