"""Optional proof-of-work at join, switched on per wave (`pow_bits`) during a surge of scripted
joins: every place then costs the joiner about 2^bits SHA-256 computations, the same for a
bot farm's thousandth place as for a person's one.

1. `GET /api/v1/waves/{wave}/challenge` gives `{"challenge", "bits", "expires_in_s"}`. A
   challenge is stateless: `<issued unix s>.<random>.<MAC>`, checked with the service secret.
2. The client finds a `counter` (decimal, up to 20 digits) such that
   SHA-256("<challenge>:<identity>:<counter>") starts with `bits` zero bits, where
   identity is exactly the `registrant` (or `enqueue_token`) string it joins with. So one
   solution buys one place for one identity, never one for each of many.
3. It joins with `"pow": {"challenge": ..., "counter": ...}` in the body. Checking costs one
   SHA-256 and one MAC, whatever `bits` is.

The waiting page solves it in a Web Worker with the browser's own SHA-256 (SubtleCrypto).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from queue_service.errors import BadRequest, Forbidden
from queue_service.tickets import b64url, subkey

CHALLENGE_TTL_S = 300
MAX_COUNTER_DIGITS = 20
MAX_CHALLENGE_LENGTH = 80


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte:
            return bits + 8 - byte.bit_length()
        bits += 8
    return bits


def solve(challenge: str, identity: str, bits: int) -> str:
    """A counter that solves `challenge` for `identity` (what a client does; tests, bots)."""
    prefix = f"{challenge}:{identity}:".encode()
    counter = 0
    while leading_zero_bits(hashlib.sha256(prefix + str(counter).encode()).digest()) < bits:
        counter += 1
    return str(counter)


def _refused(message: str) -> Forbidden:
    return Forbidden(message, code="proof_of_work_required")


class ChallengeCodec:
    def __init__(self, secret: bytes) -> None:
        self._mac = hashlib.blake2b(key=subkey(secret, b"challenge"), digest_size=12)

    def _sign(self, wave: str, bits: int, issued: int, nonce: str) -> str:
        mac = self._mac.copy()
        mac.update(f"{wave}\x00{bits}\x00{issued}\x00{nonce}".encode())
        return b64url(mac.digest())

    def issue(self, wave: str, bits: int, now: float) -> dict[str, Any]:
        issued, nonce = int(now), secrets.token_urlsafe(9)
        challenge = f"{issued}.{nonce}.{self._sign(wave, bits, issued, nonce)}"
        return {"challenge": challenge, "bits": bits, "expires_in_s": CHALLENGE_TTL_S}

    def check(self, wave: str, bits: int, proof: object, identity: str, now: float) -> None:
        """Refuse (403) a join whose proof is missing, expired, forged or too weak."""
        if not isinstance(proof, dict):
            raise _refused(
                f"This wave asks for a proof of work ({bits} bits): get a challenge from "
                f"/api/v1/waves/{wave}/challenge and join with pow: {{challenge, counter}}."
            )
        challenge, counter = proof.get("challenge"), proof.get("counter")
        if not (
            isinstance(challenge, str)
            and isinstance(counter, str)
            and len(challenge) <= MAX_CHALLENGE_LENGTH
            and challenge.isascii()
            and counter.isascii()
            and counter.isdigit()
            and len(counter) <= MAX_COUNTER_DIGITS
        ):
            raise BadRequest(
                "pow must be {challenge: string, counter: decimal string}", code="invalid_pow"
            )
        issued_text, _, rest = challenge.partition(".")
        nonce, _, mac = rest.partition(".")
        if not issued_text.isdigit() or not hmac.compare_digest(
            mac, self._sign(wave, bits, int(issued_text), nonce)
        ):
            raise _refused("The proof-of-work challenge is not one of ours; get a new one.")
        if now - int(issued_text) > CHALLENGE_TTL_S:
            raise _refused("The proof-of-work challenge has expired; get a new one.")
        digest = hashlib.sha256(f"{challenge}:{identity}:{counter}".encode()).digest()
        if leading_zero_bits(digest) < bits:
            raise _refused("The proof of work does not solve the challenge.")
