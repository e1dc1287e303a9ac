"""Typed application state (aiohttp AppKeys), in one small module."""

from __future__ import annotations

from aiohttp import web

from queue_service.admin import WaveAdmin
from queue_service.callbacks import Callbacks
from queue_service.http.status_page import StatusBoard
from queue_service.ledger import Ledger
from queue_service.overload import OverloadGuard
from queue_service.ratelimit_local import LocalGcra
from queue_service.redis_client import RedisClient
from queue_service.service import QueueService
from queue_service.settings import Settings
from queue_service.store import Store
from queue_service.tokens import KeyRing
from queue_service.verify import AdmissionCheck

SETTINGS = web.AppKey("settings", Settings)
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
STORE = web.AppKey("store", Store)
SERVICE = web.AppKey("service", QueueService)
KEYRING = web.AppKey("keyring", KeyRing)
OVERLOAD = web.AppKey("overload", OverloadGuard)
ADMIN = web.AppKey("admin", WaveAdmin)
"""The admin use cases (admin.py)."""
ADMIN_FAILURES = web.AppKey("admin_failures", LocalGcra)
"""Refused admin tokens per client address (admin.py)."""
LEDGER = web.AppKey("ledger", Ledger)
"""Public proof: every wave's admission ledger (ledger.py)."""
ADMISSION_CHECK = web.AppKey("admission_check", AdmissionCheck)
"""The verify route's token checks, with their caches (verify.py)."""
STATUS_BOARD = web.AppKey("status_board", StatusBoard)
"""The public status board, built at most every few seconds (status_page.py)."""
CALLBACKS = web.AppKey("callbacks", Callbacks)
"""Call-backs: opt-in, the notify step, the return link (callbacks.py)."""
VAPID_PUBLIC_KEY = web.AppKey("vapid_public_key", str)
"""The Web Push applicationServerKey the waiting page subscribes with."""
