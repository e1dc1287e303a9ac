"""The call-backs `gelombang demo` adds to its run through Gelombang when the scenario has none
(issue 24): a share of the people who stay in line leave the page to be messaged by SMS or
WhatsApp (the driver's own gateway), then come back by their link a few seconds later.

The bundled `laptop` scenario stays without a `[callbacks]` table: the model's tests and the
load-test verdicts read it, and opting in draws from the same random stream as everything
else a person does. A scenario with its own table keeps it unchanged.

The demo's clock is compressed (its seconds stand for minutes) but the service's minimums are
not: with `lead_s` 60 s everyone waiting is within the lead of the cursor, so a person is
messaged when they opt in or at the opening; with `return_window_s` 120 s no place runs out
within a run of at most ~100 s. The return delay is compressed like the rest of the clock, so
people come back inside the run and the figures count real returns.
"""

from __future__ import annotations

import dataclasses

from queue_service.notify_config import MIN_LEAD_S, MIN_RETURN_WINDOW_S
from simulator.callback_params import CallbackParams
from simulator.scenario import Scenario

DEMO_CALLBACKS = CallbackParams(
    optin_share=0.3,  # of the people who stay in line (bots never opt in)
    never_return_share=0.1,
    return_median_s=4.0,  # compressed from minutes, like the demo's patience and polling
    return_sigma=0.5,
    lead_s=MIN_LEAD_S,
    return_window_s=MIN_RETURN_WINDOW_S,
    channels={"sms": 0.6, "whatsapp": 0.4},  # the two the driver's gateway receives
)


def with_demo_callbacks(scenario: Scenario) -> Scenario:
    """`scenario` with DEMO_CALLBACKS when it has no call-backs of its own, else unchanged."""
    if scenario.callbacks.enabled:
        return scenario
    return dataclasses.replace(scenario, callbacks=DEMO_CALLBACKS)
