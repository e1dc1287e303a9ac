"""In-memory registration state: accounts, identity checks, OTP codes and wave sign-ups.

Every method runs without awaiting, so on one event loop each check-then-change is atomic:
no two requests can create the same e-mail twice or slip past the OTP limits together.
"""

from __future__ import annotations

import itertools
import random
import secrets
from dataclasses import dataclass, field

from simulator.origin.validation import InvalidSubmission


@dataclass
class OtpState:
    code: str = ""
    sends: int = 0
    verify_attempts: int = 0
    locked_until: float = 0.0
    verified: bool = False


@dataclass
class Account:
    account_id: str
    email: str
    phone: str
    name: str
    nik: str | None = None
    ktp_verified: bool = False
    otp: OtpState = field(default_factory=OtpState)
    joined_wave: str | None = None


class RegistrationStore:
    def __init__(
        self,
        *,
        otp_max_sends: int,
        otp_lockout_s: float,
        otp_max_verify_attempts: int,
        rng: random.Random | None = None,
    ) -> None:
        self._accounts: dict[str, Account] = {}
        self._by_email: dict[str, str] = {}
        self._by_nik: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._otp_max_sends = otp_max_sends
        self._otp_lockout_s = otp_lockout_s
        self._otp_max_verify = otp_max_verify_attempts
        self._rng = rng or random.Random(secrets.randbits(64))
        self.completed = 0

    def __len__(self) -> int:
        return len(self._accounts)

    def create_account(self, *, email: str, phone: str, name: str) -> tuple[Account, bool]:
        """The account for this e-mail; `True` when it was created now (a retry after a lost
        answer gets the same account back, as a real idempotent sign-up should)."""
        existing = self._by_email.get(email.lower())
        if existing is not None:
            account = self._accounts[existing]
            if account.phone != phone:
                raise InvalidSubmission(
                    "email_taken", "This e-mail address belongs to another account.", 409
                )
            return account, False
        account = Account(f"A{next(self._ids):08d}", email, phone, name)
        self._accounts[account.account_id] = account
        self._by_email[email.lower()] = account.account_id
        return account, True

    def account(self, account_id: str) -> Account:
        account = self._accounts.get(account_id)
        if account is None:
            raise InvalidSubmission("unknown_account", "No account has this id.", 404)
        return account

    def record_ktp(self, account: Account, nik: str) -> None:
        owner = self._by_nik.get(nik)
        if owner is not None and owner != account.account_id:
            raise InvalidSubmission(
                "nik_taken", "This NIK is already registered to another account.", 409
            )
        self._by_nik[nik] = account.account_id
        account.nik = nik
        account.ktp_verified = True

    def send_otp(self, account: Account, now: float) -> str:
        otp = account.otp
        if otp.locked_until > now:
            raise _locked(otp.locked_until - now)
        if otp.locked_until and otp.locked_until <= now:
            otp.sends, otp.locked_until = 0, 0.0  # the lockout is over: a fresh allowance
        if otp.sends >= self._otp_max_sends:
            otp.locked_until = now + self._otp_lockout_s
            raise _locked(self._otp_lockout_s)
        otp.sends += 1
        otp.verify_attempts = 0
        otp.code = f"{self._rng.randrange(1_000_000):06d}"
        return otp.code

    def verify_otp(self, account: Account, code: str) -> None:
        otp = account.otp
        if otp.verified:
            return
        if not otp.code:
            raise InvalidSubmission("otp_not_sent", "Ask for a code first.", 409)
        if otp.verify_attempts >= self._otp_max_verify:
            raise InvalidSubmission(
                "otp_attempts_exceeded", "Too many wrong codes; ask for a new one.", 429
            )
        otp.verify_attempts += 1
        if not secrets.compare_digest(code, otp.code):
            raise InvalidSubmission("otp_invalid", "The code is wrong.", 400)
        otp.verified = True

    def join_wave(self, account: Account, wave: str) -> bool:
        """Sign the account up; `True` the first time (a repeat is harmless)."""
        if not account.ktp_verified:
            raise InvalidSubmission("ktp_not_verified", "Verify your KTP first.", 409)
        if not account.otp.verified:
            raise InvalidSubmission("phone_not_verified", "Verify your phone number first.", 409)
        if account.joined_wave == wave:
            return False
        if account.joined_wave is not None:
            raise InvalidSubmission("already_joined", "This account joined another wave.", 409)
        account.joined_wave = wave
        self.completed += 1
        return True


def _locked(retry_after_s: float) -> InvalidSubmission:
    return InvalidSubmission(
        "otp_locked",
        "Too many codes requested; try again after the lockout.",
        429,
        retry_after_s=retry_after_s,
    )
