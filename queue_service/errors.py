"""Domain errors, each mapped once to the public JSON error shape and an HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """An error a client may see: `{"error": {"code", "message"}}` with `status`."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class UnknownWave(NotFound):
    """There is no wave with this id. Raised where that is found out (a script's reply in
    `store.py`, the registry's lookup), answered like every ApiError by `http/endpoint.py`: nobody
    in between translates it."""

    code = "unknown_wave"

    def __init__(self, wave: str) -> None:
        super().__init__(f"There is no wave called {wave!r}.")
        self.wave = wave


class Conflict(ApiError):
    status = 409
    code = "conflict"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"


class StoreUnavailable(ApiError):
    """Redis is unreachable or too slow; the client should retry shortly."""

    status = 503
    code = "store_unavailable"


class ServiceUnavailable(ApiError):
    """Something the request needs is briefly out of reach (not the state store)."""

    status = 503
    code = "unavailable"


class Overloaded(ApiError):
    """The process is at its limit of requests in flight; shed before any work is done."""

    status = 503
    code = "overloaded"


class RequestTimeout(ApiError):
    status = 408
    code = "request_timeout"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"
