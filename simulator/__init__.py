"""Gelombang simulator: synthetic registrants, wave scenarios, arrivals, the registrant's
journey, the live driver, the offline wave model and the run report.

Shared modules (imported by the live driver, the model, the sample origin and the Locust
scenarios):

- `simulator.registrants`: `Registrant`, `Population`, `nik_is_valid`, `parse_nik`.
- `simulator.behaviour`: poll, retry, balk, renege, leave and return decisions given draws.
- `simulator.journey`: the registrant's decisions as a state machine with no I/O.
- `simulator.client`: the queue's public API without I/O: requests, one answer parser.
- `simulator.flow`: the origin's registration steps.
- `simulator.scenario`: `Scenario` (every parameter named) and `load_scenario(name_or_path)`;
  `simulator.wave_definition`: the wave it describes, for whoever creates it.
- `simulator.arrivals`: non-homogeneous Poisson arrival times, generated lazily by thinning.
- `simulator.records`: the run record both the live driver and the offline model produce.
- `simulator.driver`: the live driver; `simulator.model`: the offline discrete-event model.
- `simulator.stats`: the statistics of a run (percentiles, Kendall tau-b, fairness, summary).
- `simulator.charts`: the SVG chart kit of the report.
- `simulator.summary`: the figures' labels and meanings, the settings and the verdict, shared
  by the terminal summary and the report page.
- `simulator.report`: `report.json` and one self-contained HTML page from one or two runs.
"""

from __future__ import annotations
