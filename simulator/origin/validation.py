"""Checks of what a registrant submits: KTP identity numbers, age, and the KTP photo."""

from __future__ import annotations

from datetime import date

from simulator.registrants import InvalidNik, age_on, kk_is_valid, parse_nik

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class InvalidSubmission(Exception):
    """Bad registrant input; `code` is the snake_case error code for the JSON answer."""

    def __init__(
        self, code: str, message: str, status: int = 400, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


def photo_kind(head: bytes) -> str | None:
    """'jpeg' or 'png' from the file's magic bytes (never from its name or declared type)."""
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if head.startswith(PNG_MAGIC):
        return "png"
    return None


def check_identity(nik: str, kk: str, *, today: date, min_age: int) -> date:
    """Validate a NIK (structure) and KK number and the holder's age; return the birth date."""
    try:
        info = parse_nik(nik, today)
    except InvalidNik as exc:
        raise InvalidSubmission("invalid_nik", f"The NIK is not valid: {exc}.") from None
    if not kk_is_valid(kk):
        raise InvalidSubmission(
            "invalid_kk", "The KK (family card) number must be 16 digits with a known region."
        )
    if age_on(info.birth_date, today) < min_age:
        raise InvalidSubmission(
            "too_young", f"Registrants must be at least {min_age} years old.", status=422
        )
    return info.birth_date
