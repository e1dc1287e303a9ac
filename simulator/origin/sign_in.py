"""Sign-in at the sample origin: the registration site hands a signed-in person a short-lived
enqueue token for the wave (a verified join, queue_service/enqueue.py), so the queue knows the
person by their account rather than by a NIK anyone could type.

    POST /api/v1/sign-in  {"email": ..., "phone": ...[, "wave": ...]}
      -> {"account": <opaque account key>, "enqueue_token": <JWT>, "queue_url": <page link>}
    GET /.well-known/enqueue-jwks.json   the public key the wave is configured with

The sample has no passwords: an e-mail and phone pair is the account (a real site checks its
own login). Signing in does not hold a worker of the capacity model: it stands for a login
page served in front of the busy registration flow.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote

import orjson
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from queue_service.enqueue import mint_enqueue_token
from queue_service.tokens import key_id, public_jwk
from simulator.origin.validation import InvalidSubmission

ENQUEUE_TOKEN_LIFETIME_S = 300
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[A-Za-z]{2,24}$")


@dataclass(frozen=True)
class EnqueueSigner:
    key: Ed25519PrivateKey
    wave: str | None
    """The wave the tokens are for; None: the wave the sign-in names (an origin serving
    several rehearsal waves)."""
    queue_url: str
    """Where the waiting page is (`<queue_url>/w/<wave>`)."""

    @property
    def kid(self) -> str:
        return key_id(self.key.public_key())

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [public_jwk(self.key.public_key())]}


SIGNER = web.AppKey("enqueue_signer", EnqueueSigner)


def account_key(email: str, phone: str) -> str:
    """A stable, opaque account id (the enqueue token's `sub`): no e-mail travels in a link."""
    digest = hashlib.blake2b(f"{email.lower()}\x00{phone}".encode(), digest_size=12)
    return "acct-" + digest.hexdigest()


async def sign_in(request: web.Request) -> web.Response:
    signer = request.app[SIGNER]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidSubmission("invalid_json", "The body must be JSON.") from None
    email, phone = (body.get(k) if isinstance(body, dict) else None for k in ("email", "phone"))
    if not isinstance(email, str) or not EMAIL_RE.match(email):
        raise InvalidSubmission("invalid_email", "The e-mail address is not valid.")
    if not isinstance(phone, str) or not phone.startswith("+62"):
        raise InvalidSubmission("invalid_phone", "The phone number must look like +628….")
    wave = signer.wave or (body.get("wave") if isinstance(body, dict) else None)
    if not isinstance(wave, str) or not wave:
        raise InvalidSubmission("invalid_wave", "Name the wave to sign in for.")
    account = account_key(email, phone)
    token = mint_enqueue_token(
        signer.key,
        wave=wave,
        account=account,
        kid=signer.kid,
        lifetime_s=ENQUEUE_TOKEN_LIFETIME_S,
    )
    link = f"{signer.queue_url.rstrip('/')}/w/{wave}#enqueue_token={quote(token)}"
    payload = {"account": account, "enqueue_token": token, "queue_url": link}
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


async def enqueue_jwks(request: web.Request) -> web.Response:
    body = orjson.dumps(request.app[SIGNER].jwks())
    return web.Response(
        body=body, content_type="application/json", headers={"Cache-Control": "max-age=300"}
    )
