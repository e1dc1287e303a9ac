"""Gelombang stress test: the users of `locustfile.py` added step by step until
--step-max-users, to find the users/requests per second where the service starts to fail.

    locust -f loadtests/stress.py --headless --step-users 20 --step-seconds 20 \
        --step-max-users 400 --host http://127.0.0.1:8080 --csv reports/stress --csv-full-history
"""

from __future__ import annotations

from loadtests.locustfile import AdminUser, BotUser, RefreshStormUser, RegistrantUser
from loadtests.shapes import StepUpShape

__all__ = ["AdminUser", "BotUser", "RefreshStormUser", "RegistrantUser", "StepUpShape"]
