"""Gelombang rehearsal of a wave opening: the users of `locustfile.py` driven by the arrival
curve of a simulator scenario (build-up, spike, decay), compressed into --shape-duration.

    locust -f loadtests/wave_opening.py --headless --scenario laptop --peak-users 60 \
        --shape-duration 90 --host http://127.0.0.1:8080 --admin-token "$GELOMBANG_ADMIN_TOKEN"
"""

from __future__ import annotations

from loadtests.locustfile import AdminUser, BotUser, RefreshStormUser, RegistrantUser
from loadtests.shapes import WaveOpeningShape

__all__ = ["AdminUser", "BotUser", "RefreshStormUser", "RegistrantUser", "WaveOpeningShape"]
