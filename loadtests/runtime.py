"""Per-process state shared by the user classes, shapes and checks: the validated settings and
the registrant population, built once per Locust environment."""

from __future__ import annotations

from typing import Any

from loadtests.options import LoadSettings, settings_from
from simulator.registrants import Population, Registrant

# Registrants are built lazily by index, so the population can be far larger than a run uses.
# Each worker draws from its own block of indices: no two workers send the same person.
POPULATION_SIZE = 10**12
WORKER_BLOCK = 10**9

_settings: dict[int, LoadSettings] = {}
_populations: dict[int, Population] = {}


def load_settings(environment: Any) -> LoadSettings:
    key = id(environment)
    if key not in _settings:
        _settings[key] = settings_from(environment.parsed_options, environment.host)
    return _settings[key]


class _Offset:
    """`population[i]` for a worker: index i of its own block."""

    def __init__(self, inner: Population, offset: int) -> None:
        self.inner = inner
        self.offset = offset

    def __getitem__(self, index: int) -> Registrant:
        return self.inner[self.offset + index]


def population(environment: Any) -> _Offset:
    key = id(environment)
    if key not in _populations:
        settings = load_settings(environment)
        mix = settings.scenario.population_mix
        _populations[key] = Population(settings.population_seed, POPULATION_SIZE, mix)
    worker_index = max(0, int(getattr(environment.runner, "worker_index", 0) or 0))
    return _Offset(_populations[key], worker_index * WORKER_BLOCK)
