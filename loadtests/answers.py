"""Reading an answer in a Locust user: the fast client's response as `simulator.client` reads
every answer. Kept apart from Locust (importing Locust monkey-patches the process), so that
tests can import it."""

from __future__ import annotations

from typing import Any

from simulator.client import Answer, parse_answer


def plain_headers(headers: Any) -> dict[str, str]:
    """A response's headers as a plain dict with lower-case names. Not `dict(headers)`: the
    fast client's header map stores (name, value) pairs, and a repeated header as a list."""
    return {str(name).lower(): str(value) for name, value in (headers or {}).items()}


def answer_of(status: int, content: bytes | None, headers: Any) -> Answer:
    """A Locust response (`status_code`, `content`, `headers`) as an `Answer`; a status of 0
    (the fast client's "no answer") is None."""
    retry_after = plain_headers(headers).get("retry-after")
    return parse_answer(status or None, content, retry_after)
