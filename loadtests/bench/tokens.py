"""Admission tokens for the verify benchmark: a signing key written where `gelombang serve`
looks for its development key (state_dir/keys), and tokens minted with it, as the service
would issue them to admitted registrants."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from queue_service.tokens import KeyRing, TokenIssuer, write_private_key


def write_signing_key(state_dir: Path) -> KeyRing:
    keys = state_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    write_private_key(key, keys / "signing-bench.pem")
    return KeyRing.from_keys(key)


def write_tokens(path: Path, keyring: KeyRing, wave: str, count: int) -> Path:
    """`count` valid tokens of `wave` (one per registrant), one a line, valid for an hour."""
    issuer = TokenIssuer(keyring)
    now = time.time()
    with path.open("w") as out:
        for seq in range(1, count + 1):
            token = issuer.issue(
                wave=wave, subject=secrets.token_urlsafe(16), ticket=seq, incarnation="bench",
                stamp=secrets.token_urlsafe(6), admitted_at=now, expires_at=now + 3600,
            )  # fmt: skip
            out.write(token + "\n")
    return path
