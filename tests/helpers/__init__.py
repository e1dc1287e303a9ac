"""What the tests share, imported as `tests.helpers.<module>`: `support` (an in-process
service and its calls), `processes` (real `gelombang` processes), `pages` (Chromium through
Playwright), `tools` (system tools a test needs), `tiers` (what the quick tier may not do),
`known_runs` (hand-built run records), `scenarios/` (scenario files of the tests)."""
