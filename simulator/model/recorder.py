"""What a model run records, with the live driver's definitions: the per-bin series, each
person's last word (their fate), sampled outcomes, and the run record built from them."""

from __future__ import annotations

from simulator.records import RegistrantOutcome, TimeSeries

# What finally happened to a person (their last word counts).
NONE, REGISTERED_FATE, BALKED, RENEGED, ABANDONED, REJECTED, RUN_ENDED, ERRORS = range(8)
FATE_NAMES = {BALKED: "balked", RENEGED: "reneged", ABANDONED: "abandoned",
              REJECTED: "rejected", RUN_ENDED: "run_ended", ERRORS: "errors"}  # fmt: skip


class Recorder:
    """Per-bin series, people's fates, and the outcomes of every `every`-th registrant."""

    def __init__(self, duration: float, step: float, every: int, population: int) -> None:
        self.series = TimeSeries.empty(duration, step)
        self.step = step
        self.bins = len(self.series)
        self.every = every
        self.outcomes: dict[int, RegistrantOutcome] = {}
        self.current: dict[int, int] = {}  # sampled registrant -> their latest ticket
        self.peak_polls = [0.0] * self.bins
        self.joins = [0] * self.bins  # join requests, refused ones and returns included
        self.fate = bytearray(population + population // 10 + 100)
        self.refused_in_bulk = 0
        self.individually = 0  # registrants handled one by one (the rest refused in bulk)

    def bin(self, t: float) -> int:
        k = int(t // self.step)
        return k if k < self.bins else self.bins - 1

    def give_up(self, index: int, t: float, fate: int) -> None:
        """A person stops (for now): counted, and their fate unless they registered."""
        fates = self.fate
        if index >= len(fates):
            fates.extend(bytes(index + 1 - len(fates) + 1024))
        if fates[index] != REGISTERED_FATE:
            fates[index] = fate
        k = int(t // self.step)
        self.series.gave_up[k if k < self.bins else self.bins - 1] += 1
        if index % self.every:
            return  # not sampled
        o = self.outcomes.get(index)
        if o is not None and o.completed_t is None:
            o.gave_up_t, o.gave_up_reason = t, FATE_NAMES[fate]

    def sampled(self, index: int, ticket: int) -> RegistrantOutcome | None:
        """The outcome of a sampled registrant, while `ticket` is their latest."""
        if index % self.every or self.current.get(index) != ticket:
            return None
        return self.outcomes[index]

    def gave_up_totals(self) -> dict[str, int]:
        """People by their last word (a reneger who came back and registered is not one)."""
        counts = [0] * len(FATE_NAMES) * 2
        fates = self.fate
        for index in range(min(self.individually, len(fates))):
            counts[fates[index]] += 1
        counts[RUN_ENDED] += counts[NONE]  # still in the flow at the end
        totals = {name: counts[code] for code, name in FATE_NAMES.items() if counts[code]}
        if self.refused_in_bulk:
            totals["rejected"] = totals.get("rejected", 0) + self.refused_in_bulk
        return totals
