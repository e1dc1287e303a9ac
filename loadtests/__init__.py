"""Locust scenarios for rehearsing a wave opening against Gelombang (docs/loadtesting.md).

Locustfiles (each holds at most one load shape, because Locust uses the first it finds):
- `locustfile.py`: every user class, for a fixed `-u/-r` run.
- `wave_opening.py`: the same users following a scenario's arrival curve (`WaveOpeningShape`).
- `stress.py`: the same users added step by step (`StepUpShape`).

Modules: `users.py` (registrant, bot, refresh storm, admin); `shapes.py`, `curves.py` and
`stepping.py` (load shapes, the curve they follow, the stress steps); `verdict.py` (the checks,
pure) and `checks.py` (their wiring to Locust's events); `tally.py` and `counters.py` (counts
summed across workers); `options.py` and `runtime.py` (command-line options, per-process
settings and population); `targets.py` (loopback guard, admin API and metrics calls);
`wave_setup.py` (the wave, created at start). `verdict.py`, `curves.py`, `stepping.py`,
`counters.py` and `targets.py` do not import Locust (importing it monkey-patches the process
with gevent), so they can be used and tested anywhere.

Run from the repository root, e.g.
    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host http://127.0.0.1:8080 --origin-url http://127.0.0.1:8090
"""
