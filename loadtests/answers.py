"""Reading the queue's answers in Locust users, kept apart from Locust (importing Locust
monkey-patches the process), so that tests can import it."""

from __future__ import annotations

from typing import Any


def plain_headers(headers: Any) -> dict[str, str]:
    """A response's headers as a plain dict with lower-case names. Not `dict(headers)`: the
    fast client's header map stores (name, value) pairs, and a repeated header as a list."""
    return {str(name).lower(): str(value) for name, value in (headers or {}).items()}


def retry_after_s(headers: dict[str, str]) -> float | None:
    """The Retry-After seconds of `plain_headers(...)`, if any and numeric."""
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
