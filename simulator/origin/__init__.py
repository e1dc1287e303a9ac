"""The sample origin: a Prakerja-like registration server with a real capacity limit.

    from simulator.origin.app import create_app
    from simulator.origin.config import OriginConfig

    app = create_app(OriginConfig(capacity=50, wave="prakerja-1"), verifier=verifier)

Routes (JSON unless said): `POST /api/v1/accounts` {email, phone, name} →
`POST /api/v1/accounts/{id}/ktp` (multipart: nik, kk, photo ≤ 2 MB JPEG/PNG) →
`POST .../otp/send` → `POST .../otp/verify` {code} → `POST .../join`; `GET /healthz`,
`GET /metrics` (never protected).

Nothing is imported here: the registrants' side (`simulator.sessions`, the journey, the Locust
users) reads the origin's configuration without loading its server.
"""
