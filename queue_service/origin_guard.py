"""The origin's library at the path it was first published under: origins that import
`queue_service.origin_guard` keep working. It lives in `gelombang/origin_guard.py`, outside the
service's folder (docs/architecture.md); new code imports it from there."""

from gelombang.origin_guard import (
    ADMISSION,
    BINDING_COOKIE,
    BINDING_HEADER,
    TOKEN_COOKIE,
    TOKEN_QUERY,
    Bindings,
    JwksVerifier,
    OriginHealthMetrics,
    RedisTokenBindings,
    RevocationFeed,
    TokenBindings,
    admission_middleware,
    token_from_request,
)

__all__ = [
    "ADMISSION",
    "BINDING_COOKIE",
    "BINDING_HEADER",
    "TOKEN_COOKIE",
    "TOKEN_QUERY",
    "Bindings",
    "JwksVerifier",
    "OriginHealthMetrics",
    "RedisTokenBindings",
    "RevocationFeed",
    "TokenBindings",
    "admission_middleware",
    "token_from_request",
]
