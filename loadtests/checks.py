"""Turn a run into a verdict: checks evaluated when Locust quits, a non-zero exit code when one
fails (so CI can gate on a rehearsal), and the verdict printed and optionally written as JSON.

While the test runs, the master (or the single process) samples the wave (through the admin API,
or the queue's `/metrics` without an admin token) and the origin's `/metrics` every
`--check-sample-s`; request counts come from `tally`.

The checks themselves are pure functions in `verdict.py`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import gevent
import requests
from locust import events
from locust.runners import WorkerRunner

# wave_setup first: its test_start listener must create the wave before the sampler reads it.
from loadtests import stepping, wave_setup  # noqa: F401
from loadtests.options import LoadSettings
from loadtests.runtime import load_settings
from loadtests.tally import TALLY
from loadtests.targets import get_wave_admin, scrape
from loadtests.verdict import (
    OriginSample,
    WaveSample,
    evaluate,
    origin_sample,
    render,
    wave_sample,
    wave_sample_from_metrics,
)

log = logging.getLogger("loadtests.checks")

VERDICT_FAILED_EXIT_CODE = 3


class Sampler:
    """Samples the wave and the origin in a greenlet between test_start and test_stop."""

    def __init__(self, settings: LoadSettings) -> None:
        self.settings = settings
        self.waves: list[WaveSample] = []
        self.origins: list[OriginSample] = []
        self.errors: list[str] = []
        self._greenlet: gevent.Greenlet[[], None] | None = None

    def start(self) -> None:
        self.sample_once()
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True)
            self._greenlet = None
        self.sample_once()

    def _loop(self) -> None:
        while True:
            gevent.sleep(self.settings.check_sample_s)
            self.sample_once()

    def sample_once(self) -> None:
        s = self.settings
        try:
            if s.admin_token:
                view = get_wave_admin(s.host, s.admin_token, s.wave)
                self.waves.append(wave_sample(view, time.monotonic()))
            else:
                sample = wave_sample_from_metrics(scrape(s.host + "/metrics"), s.wave, 0.0)
                if sample is not None:
                    self.waves.append(replace(sample, t=time.monotonic()))
        except (requests.RequestException, ValueError) as exc:
            self._note(f"wave: {exc}")
        try:
            metrics = scrape(s.origin_url + "/metrics")
            self.origins.append(origin_sample(metrics, time.monotonic()))
        except (requests.RequestException, ValueError) as exc:
            self._note(f"origin metrics: {exc}")

    def _note(self, message: str) -> None:
        if message not in self.errors:
            log.warning("sampling: %s", message)
            self.errors.append(message)


# ---------------------------------------------------------------------------- wiring

_sampler: Sampler | None = None


def _is_worker(environment: Any) -> bool:
    return isinstance(environment.runner, WorkerRunner)


def _start_sampling(environment: Any, **_kwargs: Any) -> None:
    global _sampler
    if _is_worker(environment):
        return
    TALLY.reset()
    _sampler = Sampler(load_settings(environment))
    _sampler.start()


events.test_start.add_listener(_start_sampling)


def _stop_sampling(environment: Any, **_kwargs: Any) -> None:
    if _sampler is not None and not _is_worker(environment):
        _sampler.stop()


events.test_stop.add_listener(_stop_sampling)


def _verdict(environment: Any, **_kwargs: Any) -> None:
    if _is_worker(environment) or environment.process_exit_code == 2:
        return
    settings = load_settings(environment)
    results = evaluate(
        TALLY.counts,
        _sampler.waves if _sampler else [],
        _sampler.origins if _sampler else [],
        bot_limited_min=settings.check_bot_limited_min,
        admission_tolerance=settings.check_admission_tolerance,
        allow_skipped=settings.check_allow_skip,
        callbacks=settings.scenario.callbacks.enabled,
    )
    if stepping.RECORDS:  # a step-up stress run: where did it break?
        log.info("%s", stepping.render_steps(stepping.RECORDS, settings.step_limits))
    log.info("%s", render(results))
    passed = all(r.passed for r in results)
    if settings.verdict_file:
        found = stepping.breaking_point(stepping.RECORDS, settings.step_limits)
        payload = {
            "passed": passed,
            "checks": [asdict(r) for r in results],
            "counts": dict(TALLY.counts),
            "sampling_errors": _sampler.errors if _sampler else [],
            "steps": [asdict(r) for r in stepping.RECORDS],
            "breaking_point": (
                {"step": asdict(found[0]), "reason": found[1]} if found is not None else None
            ),
        }
        Path(settings.verdict_file).write_text(json.dumps(payload, indent=2) + "\n")
    if not passed:
        environment.process_exit_code = VERDICT_FAILED_EXIT_CODE


events.quitting.add_listener(_verdict)
