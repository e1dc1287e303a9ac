"""Names of the counters the verdict needs beyond Locust's request stats (one place, so the
user classes, the tally and the checks agree). No Locust import: `verdict.py` uses them."""

from __future__ import annotations

QUEUE_REQUESTS = "queue_requests"
QUEUE_5XX = "queue_5xx"
QUEUE_RATE_LIMITED = "queue_rate_limited"
BOT_REQUESTS = "bot_requests"
BOT_RATE_LIMITED = "bot_rate_limited"
ORIGIN_REQUESTS = "origin_requests"
ORIGIN_5XX = "origin_5xx"
ADMISSIONS_SEEN = "admissions_seen"
REGISTRATIONS_COMPLETED = "registrations_completed"
SESSIONS_COMPLETED = "sessions_completed"
POSITION_WORSENED = "position_worsened"
