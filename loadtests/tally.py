"""Counters the verdict needs beyond Locust's request stats, added up across workers.

Each process counts into its own `Tally`; a worker ships its counts with every stats report
(`report_to_master`) and the master adds them up (`worker_report`), so the checks see the
same totals in a single process and in a distributed run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from locust import events

REPORT_KEY = "gelombang_tally"


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._unreported: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount
        self._unreported[name] += amount

    def take_unreported(self) -> dict[str, int]:
        out = dict(self._unreported)
        self._unreported.clear()
        return out

    def merge(self, counts: dict[str, int]) -> None:
        self.counts.update(counts)

    def reset(self) -> None:
        self.counts.clear()
        self._unreported.clear()

    def __getitem__(self, name: str) -> int:
        return self.counts[name]


TALLY = Tally()


def _ship(client_id: str, data: dict[str, Any]) -> None:
    data[REPORT_KEY] = TALLY.take_unreported()


events.report_to_master.add_listener(_ship)


def _collect(client_id: str, data: dict[str, Any]) -> None:
    TALLY.merge(data.get(REPORT_KEY, {}))


events.worker_report.add_listener(_collect)
