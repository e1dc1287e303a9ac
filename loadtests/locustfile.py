"""Gelombang rehearsal: every user class, for a fixed number of users (`-u`, `-r`).

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host http://127.0.0.1:8080 --origin-url http://127.0.0.1:8090 \
        --admin-token "$GELOMBANG_ADMIN_TOKEN" --csv reports/run --json-file reports/run.json

Pick classes by name (`RegistrantUser BotUser`) to run only some. For a wave-opening curve use
`loadtests/wave_opening.py`, for a step-up stress test `loadtests/stress.py`. The verdict is
printed at the end; the exit code is non-zero when a check failed (docs/loadtesting.md).
"""

from __future__ import annotations

# Imported for their event listeners: options, the tally, wave set-up, then the checks.
from loadtests import callbacks, checks, options, tally, wave_setup  # noqa: F401
from loadtests.users import AdminUser, BotUser, RefreshStormUser, RegistrantUser

__all__ = ["AdminUser", "BotUser", "RefreshStormUser", "RegistrantUser"]
