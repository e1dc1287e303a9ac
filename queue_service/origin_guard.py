"""The origin's library at the path it was first published under, so origins that import
`queue_service.origin_guard` keep working. It lives in `gelombang_origin`, outside the
service's folder (docs/architecture.md); new code imports it from there."""

from gelombang_origin import (
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
