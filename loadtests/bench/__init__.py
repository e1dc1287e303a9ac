"""End-to-end benchmarks of the queue service on loopback (issue 6).

`python -m loadtests.bench --help` lists them; `loadtests/RESULTS.md` holds the figures and the
exact commands. Not part of the test suite (too noisy): `tests/e2e/test_bench_smoke.py` only runs a
tiny version end to end so the scripts cannot rot.
"""
