"""A model run: the events of a wave in time order (the admission loop's ticks, arrivals,
people's timers, admissions), and the run record at the end.

    run_model(scenario, *, seed=None, admit_rate=None, max_active=None, quota=None,
              population=None, sample_every=None, step_s=None, progress=None,
              controller=None, carried=(), autopilot=True, origin=None) -> RunRecord
              (mode "queued", source "model"; the scenario's autopilot runs when it is on)

`carried`: holders carried over from the previous wave (`simulator.model.carry`), placed before
the run as the service places them; they are part of the crowd, so that many fewer arrive.

`WaveModel` holds the queue's state (`ModelQueue`), the people's handlers (`People`), the
origin (`OriginModel`) and the recorder. Between events an outside `Controller` may change
what admission is held to (an operator, the autopilot: each tick it sees the model and may
return new `Limits`, as `PUT /admin/v1/waves/{wave}` would set them) and the origin may be
swapped (`set_origin`: a capacity that follows a schedule).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from queue_service.pacing import PaceEstimate, PacePrior
from simulator.model.agenda import (
    CALLED_BACK_RETURN,
    CAME_BACK,
    FLOW_ENDED,
    NOTICED,
    SLOT_FREED,
    WINDOW_ENDS,
    Agenda,
)
from simulator.model.autopilot import AutopilotController
from simulator.model.callbacks import Carried
from simulator.model.capacity_origin import CapacityOrigin, capacity_origin
from simulator.model.draws import Draws
from simulator.model.origin import OriginModel, SampleOrigin
from simulator.model.people import People
from simulator.model.queue import INF, Limits, ModelQueue
from simulator.model.recorder import Recorder
from simulator.records import RegistrantOutcome, RunMeta, RunRecord, RunTotals
from simulator.scenario import Scenario

ProgressFn = Callable[[float, int], None]  # (virtual time reached, arrivals so far)


class Controller(Protocol):
    def limits_at(self, t: float, model: WaveModel) -> Limits | None:
        """Called at every tick of the admission loop: new limits from `t` on, or None.
        `model.queue` (counts, the line), `model.people` (who is in the flow) and
        `model.origin.health(...)` are what it may read."""


def default_origin(scenario: Scenario) -> OriginModel:
    """The sample origin's capacity when the run needs its health (an autopilot reads it) or
    its capacity changes; else the origin at low load (sessions of a fixed mean length)."""
    if scenario.autopilot.enabled or scenario.origin.capacity_schedule:
        return capacity_origin(scenario)
    return SampleOrigin(scenario.origin)


def default_sample_every(population: int) -> int:
    """Record at most ~50,000 registrants' outcomes."""
    return max(1, math.ceil(population / 50_000))


def scenario_limits(
    scenario: Scenario, admit_rate: float | None, max_active: int | None, quota: int | None
) -> Limits:
    """The wave settings a run uses: the scenario's, or the planner's trial (a rate given
    keeps the scenario's burst in proportion)."""
    wave = scenario.wave
    rate = wave.admit_rate if admit_rate is None else admit_rate
    if rate <= 0:
        raise ValueError("admit_rate must be > 0")
    burst = wave.burst if admit_rate is None else wave.burst_at(rate)
    return Limits.of(
        rate,
        burst,
        wave.max_active if max_active is None else max_active,
        wave.quota if quota is None else quota,
    )


class WaveModel:
    def __init__(
        self,
        scenario: Scenario,
        limits: Limits,
        seed: int,
        population: int,
        every: int,
        step: float,
        controller: Controller | None = None,
        carried: Sequence[Carried] = (),
        origin: OriginModel | None = None,
    ) -> None:
        self.scenario = scenario
        self.population = population
        self.controller = controller
        self.seed = seed
        self.arriving = max(0, population - len(carried))
        """First attempts: the crowd, less the holders carried over (they need not join)."""
        clock, wave = scenario.clock, scenario.wave
        self.duration = clock.duration_s
        self.opens, self.closes = clock.opens_at_s, min(clock.closes_at_s, clock.duration_s)
        self.tick_s = 1.0 if step <= 1.0 else 10.0
        self.draws = Draws(seed)
        self.queue = ModelQueue(
            limits,
            opens=self.opens,
            closes=self.closes,
            session_ttl_s=wave.session_ttl_s,
            rng=self.draws.rng,
        )
        self.pace = PaceEstimate(self._prior(limits))
        self.record = Recorder(self.duration, step, every, population)
        self.agenda = Agenda(self.tick_s)
        self.origin: OriginModel = origin or default_origin(scenario)
        self._origin_errors_seen = 0.0
        self.people = People(
            scenario, self.queue, self.agenda, self.draws, self.record, self.origin, self.pace
        )
        self.initial_limits = limits
        self._carry_in(carried)
        self.rate_changes: list[tuple[float, float]] = [(-INF, limits.admit_rate)]

    def _carry_in(self, carried: Sequence[Carried]) -> None:
        """Holders carried over, placed before anyone joins: first at the draw ('ahead'), or
        into the pre-queue drawn with everyone ('prequeue'); away, opted in."""
        if not carried:
            return
        from simulator.model.people import AUTO

        q, callbacks = self.queue, self.people.callbacks
        ahead = self.scenario.callbacks.carry_over_order == "ahead"
        fates = self.record.fate  # the carried are people beyond the crowd's indices
        fates.extend(bytes(max(0, self.population + len(carried) - len(fates))))
        start = self.opens - self.scenario.wave.prequeue_s
        for i, holder in enumerate(carried):
            ticket = q.tickets.issue(self.population + i, AUTO, INF, True)
            (q.carried_ahead if ahead else q.prequeue_block).append(ticket)
            callbacks.carry_in(start, ticket, holder)

    def carry_out(self) -> list[Carried]:
        """After the run: the holders the carry-over moves to the next wave (none unless the
        wave closed or filled within the run)."""
        if not self.scenario.callbacks.carry_over_to:
            return []
        if not (self.queue.full or self.closes < self.duration):
            return []
        return self.people.callbacks.carry_out(min(self.closes, self.duration))

    def _prior(self, limits: Limits) -> PacePrior:
        session = self.scenario.wave.session_estimate_s
        return PacePrior(limits.admit_rate, limits.configured_max_active, session)

    # ------------------------------------------------------------------ seams

    def set_limits(self, t: float, limits: Limits) -> None:
        """What admission is held to from `t` on (the ETA's prior follows, as the service's
        does on a configuration change)."""
        if limits == self.queue.limits:
            return
        self.queue.set_limits(t, limits)
        self.pace.prior = self._prior(limits)
        self.rate_changes.append((t, limits.admit_rate))

    def set_origin(self, origin: OriginModel) -> None:
        """Another origin from now on (sessions already in the flow keep their length)."""
        self.origin = self.people.origin = origin

    # ------------------------------------------------------------------ the run

    def on_tick(self, t: float) -> None:
        """What every process does each admission interval: count, learn the pace; and what
        a controller decides."""
        q, people = self.queue, self.people
        self.origin.advance(t, people.inflow)
        people.repace(t)
        if isinstance(self.origin, CapacityOrigin):
            errors = self.origin.errors
            k = self.record.bin(t)
            self.record.series.origin_errors[k] += round(errors) - round(self._origin_errors_seen)
            self._origin_errors_seen = errors
        if self.controller is not None:
            limits = self.controller.limits_at(t, self)
            if limits is not None:
                self.set_limits(t, limits)
        waiting = q.waiting
        admitting = q.opened and not q.full and t < self.closes
        self.pace.observe(t, q.admitted, q.skipped, waiting, q.active, q.ended, admitting)
        people.seconds_per_place = self.pace.seconds_per_place
        if people.callbacks.params.enabled:
            people.callbacks.notify_step(t, self.pace.seconds_per_place)
        rec = self.record
        k = rec.bin(t)
        series = rec.series
        series.queue_length[k] = waiting + len(q.prequeue_block)
        series.active[k] = q.active
        polls = people.status_polls_per_s(waiting)
        if polls > rec.peak_polls[k]:
            rec.peak_polls[k] = polls

    def run(self, times: Iterator[float], progress: ProgressFn | None) -> None:
        """Events in time order: ticks of the admission loop, arrivals, timers, admissions."""
        q, people, agenda = self.queue, self.people, self.agenda
        heap = agenda.heap
        handlers: dict[int, Callable[[float, int, int], None]] = {
            SLOT_FREED: people.on_slot_freed,
            FLOW_ENDED: people.on_flow_ended,
            NOTICED: people.on_noticed,
            CAME_BACK: people.on_came_back,
            WINDOW_ENDS: people.callbacks.on_window_ended,
            CALLED_BACK_RETURN: people.callbacks.on_came_back,
        }
        next_admission_at, admit_one, on_arrival = (
            q.next_admission_at,
            q.admit_one,
            people.on_arrival,
        )
        next_arrival = next(times, INF)
        index = tick = 0
        next_tick = next_report = now = 0.0
        end = self.duration
        while True:
            t_event = heap[0][0] if heap else INF
            t_admit = next_admission_at(now)
            t = min(next_arrival, t_event, t_admit, next_tick)
            if t > end:
                break
            now = t
            if t == next_tick:
                agenda.load(tick)
                people.departures.apply(tick)
                self.on_tick(t)
                tick += 1
                next_tick = tick * self.tick_s
                if progress is not None and t >= next_report:
                    progress(t, people.arrived)
                    next_report = t + max(self.tick_s, end / 200.0)
            elif t == t_event:
                _, kind, ticket, detail = heapq.heappop(heap)
                handlers[kind](t, ticket, detail)
            elif t == t_admit:
                if not q.opened:
                    q.open()
                    continue
                # admit while nothing else comes first (the admission loop's step)
                bound = next_arrival if next_arrival < next_tick else next_tick
                while True:
                    admit_one(t)
                    now = t
                    t = next_admission_at(t)
                    if t > bound or (heap and t > heap[0][0]):
                        break
            elif q.full:
                index = self.refuse_rest(t, index)
                next_arrival = INF
            else:
                on_arrival(t, index)
                index += 1
                self.record.individually = index
                next_arrival = next(times, INF)
        if not q.opened:
            q.open()
        people.settle(end)
        if progress is not None:
            progress(end, people.arrived)

    def refuse_rest(self, t_from: float, first_index: int) -> int:
        """With the wave full every later first attempt is refused (409 wave_full) and changes
        nothing else: Poisson counts per bin instead of one by one; sampled registrants get an
        outcome at a uniform time inside their bin."""
        rec, people = self.record, self.people
        process = self.scenario.arrival_process()
        process.n = float(self.arriving)
        index, step = first_index, rec.step
        rnd = self.draws.random
        k = int(t_from // step)
        while k * step < self.closes:
            lo, hi = max(t_from, k * step), min((k + 1) * step, self.closes)
            n = self.draws.poisson(process.expected_count(lo, hi))
            if n:
                people.arrived += n
                rec.series.arrivals[rec.bin(lo)] += n
                rec.series.gave_up[rec.bin(lo)] += n
                rec.joins[rec.bin(lo)] += n
                rec.refused_in_bulk += n
                first = -(-index // rec.every) * rec.every
                picked = range(first, index + n, rec.every)
                for i, u in zip(picked, sorted(rnd() for _ in picked), strict=True):
                    at = lo + u * (hi - lo)
                    rec.outcomes[i] = RegistrantOutcome(
                        index=i, is_bot=rnd() < people.bot_share, arrival_t=at,
                        gave_up_t=at, gave_up_reason="rejected",
                    )  # fmt: skip
                index += n
            k += 1
        return index

    # ------------------------------------------------------------------ the record

    def peak_joins_per_s(self) -> float:
        """The busiest bin's joins per second, or the arrival process's own peak rate when
        bins are longer than a second (the opening's first second is steeper than its minute)."""
        rec = self.record
        busiest = max(rec.joins, default=0) / rec.step
        if rec.step <= 1.0:
            return busiest
        process = self.scenario.arrival_process()
        process.n = float(self.arriving)
        instant = max(process.rate(self.opens + k) for k in range(0, 600, 5))
        return max(busiest, instant)

    def _origin_requests(self) -> int:
        if isinstance(self.origin, CapacityOrigin):
            return round(self.origin.requests)
        return int(self.people.registered * self.scenario.origin.requests_per_session)

    def admit_rate_at(self, t: float) -> float:
        """The admit_rate in force at `t` (changed by a controller, or the run's own)."""
        return next(rate for at, rate in reversed(self.rate_changes) if at <= t)

    def result_with_seed(self) -> RunRecord:
        record = self.result()
        record.meta.seed = self.seed
        if isinstance(self.controller, AutopilotController):
            record.autopilot = list(self.controller.decisions)
        return record

    def result(self) -> RunRecord:
        scenario, rec, wave = self.scenario, self.record, self.scenario.wave
        q, people, lim = self.queue, self.people, self.initial_limits
        series = rec.series
        for k in range(len(series)):
            start = k * rec.step
            in_wave = self.opens <= start < self.closes
            series.admit_rate_target[k] = self.admit_rate_at(start) if in_wave else 0.0
            series.origin_capacity[k] = scenario.origin.capacity_at(start)
        meta = RunMeta(
            mode="queued",
            scenario=scenario.name,
            seed=0,
            source="model",
            population=self.population,
            duration_s=self.duration,
            opens_at_s=self.opens,
            prequeue_s=wave.prequeue_s,
            admit_rate=lim.admit_rate,
            admit_burst=wave.burst,
            max_active=lim.configured_max_active,
            session_ttl_s=wave.session_ttl_s,
            abandon_after_s=wave.abandon_after_s,
            origin_capacity=self.origin.capacity,
            quota=lim.configured_quota,
            sample_every=rec.every,
            notes=[self.origin.describe()],
        )
        totals = RunTotals(
            arrived=people.arrived,
            joined=people.joins,
            prequeue=people.prequeue_joins,
            admitted=people.taken_up,
            completed=people.registered,
            gave_up=rec.gave_up_totals(),
            requests=self._origin_requests(),
            origin_errors=sum(series.origin_errors),
            peak_origin_inflight=max(series.origin_inflight, default=0),
            peak_queue_length=max(series.queue_length, default=0),
            queue_admitted=q.admitted,
            lapsed=q.lapsed,
            peak_status_polls_per_s=max(rec.peak_polls, default=0.0),
            peak_joins_per_s=self.peak_joins_per_s(),
            callbacks=people.callbacks.totals() if scenario.callbacks.enabled else None,
        )
        outcomes = sorted(rec.outcomes.values(), key=lambda o: o.index)
        return RunRecord(meta, series, outcomes, totals)


def run_model(
    scenario: Scenario,
    *,
    seed: int | None = None,
    admit_rate: float | None = None,
    max_active: int | None = None,
    quota: int | None = None,
    population: int | None = None,
    sample_every: int | None = None,
    step_s: float | None = None,
    progress: ProgressFn | None = None,
    controller: Controller | None = None,
    carried: Sequence[Carried] = (),
    autopilot: bool = True,
    origin: OriginModel | None = None,
) -> RunRecord:
    model = run_wave_model(
        scenario,
        seed=seed,
        admit_rate=admit_rate,
        max_active=max_active,
        quota=quota,
        population=population,
        sample_every=sample_every,
        step_s=step_s,
        progress=progress,
        controller=controller,
        carried=carried,
        autopilot=autopilot,
        origin=origin,
    )
    return model.result_with_seed()


def run_wave_model(
    scenario: Scenario,
    *,
    seed: int | None = None,
    admit_rate: float | None = None,
    max_active: int | None = None,
    quota: int | None = None,
    population: int | None = None,
    sample_every: int | None = None,
    step_s: float | None = None,
    progress: ProgressFn | None = None,
    controller: Controller | None = None,
    carried: Sequence[Carried] = (),
    autopilot: bool = True,
    origin: OriginModel | None = None,
) -> WaveModel:
    """`run_model`, giving the model after its run (`result_with_seed()` is the record).
    `autopilot`: run the scenario's `[wave.autopilot]` when it is on and no other
    `controller` is given (False: the fixed settings alone, as the sweep tries them)."""
    seed = scenario.seed if seed is None else seed
    limits = scenario_limits(scenario, admit_rate, max_active, quota)
    size = scenario.population_size if population is None else population
    every = sample_every or default_sample_every(size)
    duration = scenario.clock.duration_s
    step = step_s or (1.0 if duration <= 2 * 3600 else 60.0)
    if controller is None and autopilot and scenario.autopilot.enabled:
        controller = AutopilotController(
            scenario.autopilot, limits.configured_max_active, scenario.wave.admit_burst
        )
    model = WaveModel(
        scenario, limits, seed, size, every, step, controller, carried=carried, origin=origin
    )
    model.seed = seed
    process = scenario.arrival_process()
    process.n = float(model.arriving)
    model.run(process.times(seed), progress)
    return model
