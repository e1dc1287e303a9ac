"""At the start of a run (master or single process only): make the rehearsed wave exist and be
open now, with the scenario's settings, through the admin API.

A scenario with call-backs gives the wave a `notify` object whose `webhook_url` is the
rehearsal's own gateway (`loadtests.callbacks`), started before this runs.

Without `--admin-token` (or with `--keep-wave`) the wave is left alone and must already be open;
the run stops at once with a clear message if the queue does not know it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
import requests
from locust import events
from locust.runners import WorkerRunner

from loadtests import callbacks
from loadtests.options import LoadSettings
from loadtests.runtime import load_settings
from loadtests.targets import HTTP_TIMEOUT_S, put_wave
from simulator.wave_definition import EXAMPLE_GATEWAY, wave_definition

log = logging.getLogger("loadtests.wave_setup")

# Every load generator sends from one or a few addresses; per-IP limits sized for a carrier-grade
# NAT would refuse the whole rehearsal. Per-registrant and per-ticket limits stay as deployed:
# they are what stops a bot.
LOADTEST_IP_LIMITS: dict[str, Any] = {
    "join_per_ip": {"rate_per_s": 100_000.0, "burst": 1_000_000},
    "status_per_ip": {"rate_per_s": 100_000.0, "burst": 1_000_000},
}
WAVE_OPEN_FOR_S = 6 * 3600.0


def rehearsal_wave(
    settings: LoadSettings, now: float, webhook_url: str | None = None
) -> dict[str, Any]:
    """The scenario's wave (`simulator.wave_definition`), open from now for the run: at the
    rehearsal's admit_rate and max_active, no quota and no pre-queue, per-IP limits wide;
    call-back messages (a scenario with `[callbacks]`) to `webhook_url`, the rehearsal's
    gateway."""
    rate_limits: dict[str, Any] = dict(LOADTEST_IP_LIMITS)
    if not settings.wave_rate_limits:
        rate_limits["enabled"] = False
    return wave_definition(
        settings.scenario,
        opens_at=now - 1.0,
        closes_at=now + WAVE_OPEN_FOR_S,
        origin_url=settings.origin_url + "/",
        admit_rate=settings.admit_rate,
        max_active=settings.max_active,
        quota=0,
        prequeue_s=0,
        title=f"Locust rehearsal ({settings.scenario.name})",
        rate_limits=rate_limits,
        webhook_url=webhook_url or EXAMPLE_GATEWAY,
    )


def prepare_wave(environment: Any, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    settings = load_settings(environment)
    try:
        if settings.admin_token and not settings.keep_wave:
            put_wave(
                settings.host,
                settings.admin_token,
                settings.wave,
                rehearsal_wave(settings, time.time(), callbacks.gateway_url()),
            )
            log.info(
                "wave %s open at %s: admit_rate=%s max_active=%s",
                settings.wave,
                settings.host,
                settings.admit_rate,
                settings.max_active,
            )
            return
        response = requests.get(
            f"{settings.host}/api/v1/waves/{settings.wave}", timeout=HTTP_TIMEOUT_S
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        said = exc.response.text[:500] if exc.response is not None else ""  # the queue's why
        log.error("cannot prepare wave %s at %s: %s %s", settings.wave, settings.host, exc, said)
        environment.process_exit_code = 2
        # Quit once the runner has finished starting (quitting from inside test_start does not
        # stop a run that is still being set up).
        gevent.spawn_later(0.1, environment.runner.quit)


events.test_start.add_listener(prepare_wave)
