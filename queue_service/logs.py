"""Structured logging: one JSON object per line (or plain text for a terminal), with the id of
the HTTP request being served.

Every record carries `ts`, `level`, `logger`, `msg`, `request_id` when one is set, and every
field passed with `extra=` (admin actions pass `admin_action`, `wave`, `actor`, `changes`), so
log pipelines can filter on them without parsing the message.
"""

from __future__ import annotations

import logging
import random
import secrets
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

# Set by the endpoint wrapper (http/endpoint.py) for the duration of one request; asyncio copies
# the context into every task, so log lines of work done for that request carry its id.
request_id_var: ContextVar[str | None] = ContextVar("gelombang_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "request_id", "taskName"}

_HANDLER_NAME = "gelombang"


# Request ids only correlate log lines: they need to be unique, not unguessable. A generator
# seeded once from the OS spares a getrandom() system call per request (2% of a status poll
# in the profile) and, unlike a counter, does not reveal how many requests a process served.
_request_ids = random.Random(secrets.randbits(128))


def new_request_id() -> str:
    """A short random id (16 hex characters): unique enough to find one request in the logs."""
    return f"{_request_ids.getrandbits(64):016x}"


class RequestIdFilter(logging.Filter):
    """Stamps the current request id on the record when it is created in that request's task."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            payload["request_id"] = request_id
        for key, value in extra_fields(record).items():
            payload.setdefault(key, value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra of an unexpected type is logged as text rather than lost.
        return orjson.dumps(payload, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal; extras appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        fields = extra_fields(record)
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            fields = {"request_id": request_id, **fields}
        if fields:
            line += " " + " ".join(f"{k}={v!r}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Send every logger's records to stderr in `fmt` ("json" or "text") from `level` up.

    Safe to call more than once (each worker process, tests): it replaces its own handler.
    """
    if fmt not in {"json", "text"}:
        raise ValueError(f"log format must be 'json' or 'text', not {fmt!r}")
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)


def redacted_url(url: str) -> str:
    """A URL fit for a log line: any password in it replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
