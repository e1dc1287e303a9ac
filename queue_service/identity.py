"""Registrant ids in one canonical form per kind, so that every spelling of one id is one
registrant (one place), and a wave whose ids are NIKs refuses what cannot be a NIK.

These rules are for ids somebody typed. An account id signed by the registration site (a
verified join's enqueue token) is compared exactly as signed (`signed_account`): `Acct-7Fq2`
and `acct-7fq2`, `STRASSE` and `straße` are different accounts there, and folding them would
hand one account's place to the other. Only on an `id_kind = "nik"` wave is the signed id a NIK,
and it gets the NIK rules.

- `generic` (the default): Unicode NFKC (full-width letters and digits become ASCII), leading
  and trailing white space removed, case-folded. `Budi@Example.com ` and `budi@example.com`
  are one registrant.
- `nik`: an Indonesian NIK (Nomor Induk Kependudukan). NFKC, then every white space, `-` and
  `.` removed (`3171-2345-6789-0001`, `3171 2345 6789 0001` and full-width digits are one NIK);
  what remains must be 16 ASCII digits with a NIK's structure: a known province code, regency
  and district codes from 01, a birth date DDMMYY (day + 40 for women) that is a real date, and
  a serial from 0001. The structure check cannot tell whether a NIK was issued; only the
  registration site's own check against the population registry can.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import NamedTuple

from queue_service.errors import BadRequest

ID_KINDS = ("generic", "nik")
MAX_REGISTRANT_LENGTH = 128
NIK_SEPARATORS = re.compile(r"[\s\-.]+")
# Kemendagri province codes, all 38 provinces (2022 boundaries)
NIK_PROVINCES = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "16",
        "17",
        "18",
        "19",
        "21",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "51",
        "52",
        "53",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "72",
        "73",
        "74",
        "75",
        "76",
        "81",
        "82",
        "91",
        "92",
        "93",
        "94",
        "95",
        "96",
    ]
)


class NikParts(NamedTuple):
    province: str
    regency: str
    district: str
    day: int
    """Day of birth, women's day already reduced by 40."""
    month: int
    year_2digit: int
    female: bool
    serial: str


class InvalidNik(ValueError):
    """Not a NIK's structure; the message says why."""


def parse_nik(nik: str) -> NikParts:
    """The parts of a canonical (16-digit) NIK, or InvalidNik saying what is wrong."""
    if len(nik) != 16 or not nik.isascii() or not nik.isdigit():
        raise InvalidNik("a NIK has exactly 16 digits")
    province, regency, district = nik[0:2], nik[2:4], nik[4:6]
    if province not in NIK_PROVINCES:
        raise InvalidNik(f"unknown province code {province}")
    if regency == "00" or district == "00":
        raise InvalidNik("regency and district codes start at 01")
    day, month, yy = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    female = day > 40
    if female:
        day -= 40
    try:
        dt.date(2000, month, day)  # a leap year: 29 February is a birth date
    except ValueError:
        raise InvalidNik("the birth date DDMMYY (day + 40 for women) is not a date") from None
    if nik[12:16] == "0000":
        raise InvalidNik("the serial number starts at 0001")
    return NikParts(province, regency, district, day, month, yy, female, nik[12:16])


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_registrant")


def signed_account(raw: object, kind: str) -> str:
    """The identity of a verified join: the enqueue token's `sub` exactly as the registration
    site signed it (a NIK's canonical form on a `nik` wave)."""
    if kind == "nik":
        return canonical_registrant(raw, kind)
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_REGISTRANT_LENGTH:
        raise BadRequest(
            f"The enqueue token's sub must be an account id of 1-{MAX_REGISTRANT_LENGTH} "
            "characters.",
            code="invalid_enqueue_token",
        )
    return raw


def canonical_registrant(raw: object, kind: str) -> str:
    """The canonical form of a registrant id of `kind` (ID_KINDS), or a 400 saying why not."""
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_REGISTRANT_LENGTH:
        raise _invalid(f"registrant must be a string of 1-{MAX_REGISTRANT_LENGTH} characters.")
    text = unicodedata.normalize("NFKC", raw)
    if kind == "nik":
        nik = NIK_SEPARATORS.sub("", text)
        try:
            parse_nik(nik)
        except InvalidNik as exc:
            raise BadRequest(
                f"registrant must be a NIK (16 digits): {exc}.", code="invalid_nik"
            ) from None
        return nik
    text = text.strip().casefold()
    if not text or len(text) > MAX_REGISTRANT_LENGTH:
        raise _invalid(f"registrant must be a string of 1-{MAX_REGISTRANT_LENGTH} characters.")
    if not text.isprintable():
        raise _invalid("registrant must not contain control characters.")
    return text
