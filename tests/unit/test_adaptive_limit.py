"""The adaptive bound's law (queue_service/adaptive_limit.py), against a model of the process it
controls: closed-loop clients (each sends again when answered, after a think time) on a
process that completes at most `capacity` requests per second. The model answers each limit
at once; the law sees it through its measurements, ten a second, as in the service."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest

from queue_service.adaptive_limit import AdaptiveLimit, LimitLaw, Measurement

TICK_S = 0.1
LAW = LimitLaw()  # the shipped defaults: W* 50 ms, [64, 10 000], ±25%


@dataclass
class Process:
    """`clients` closed-loop clients with think time `think_s`; `capacity` requests per second.
    With C connections admitted (the limit), throughput and time in the system follow the
    interactive response time law: X = min(capacity, C / (think + service)),
    W = C / X - think (never below one service time)."""

    capacity: float
    clients: int
    think_s: float = 0.0
    at_s: float = 0.0
    completed: float = 0.0
    turned_away: int = 0
    cpu_s: float = 0.0
    outside_delay_s: float = 0.0
    """A wait for the CPU that is not the process's own work (a neighbour holds it)."""

    def measure(self, limit: int) -> Measurement:
        admitted = min(self.clients, limit)
        service_s = 1 / self.capacity
        throughput = min(self.capacity, admitted / (self.think_s + service_s))
        in_system_s = max(service_s, admitted / throughput - self.think_s)
        self.at_s += TICK_S
        self.completed += throughput * TICK_S
        self.cpu_s += throughput * service_s * TICK_S  # busy: utilisation
        self.turned_away += self.clients - admitted  # refused (and coming back)
        # what the loop makes a request wait is its time in the system less its own work
        delay_s = in_system_s - service_s + self.outside_delay_s
        return Measurement(
            self.at_s, int(self.completed), delay_s, admitted, self.turned_away, self.cpu_s
        )


def run(controller: AdaptiveLimit, process: Process, seconds: float) -> list[int]:
    limits = []
    for _ in range(round(seconds / TICK_S)):
        limits.append(controller.update(process.measure(controller.limit)))
    return limits


def within_band(delay_s: float, law: LimitLaw = LAW) -> bool:
    low, high = law.target_delay_s * (1 - law.tolerance), law.target_delay_s * (1 + law.tolerance)
    return low <= delay_s <= high


@pytest.mark.parametrize("capacity", [2_000, 6_000, 20_000])
def test_a_flood_converges_to_throughput_times_target_delay(capacity: int) -> None:
    controller = AdaptiveLimit()
    process = Process(capacity=capacity, clients=6_000)
    run(controller, process, 15)
    little = capacity * LAW.target_delay_s  # Little's law: the bound the law aims at
    assert little * (1 - LAW.tolerance) <= controller.limit <= little * (1 + LAW.tolerance)
    assert within_band(controller.delay_s)


def test_a_flood_is_cut_fast_when_the_host_slows_down() -> None:
    controller = AdaptiveLimit()
    process = Process(capacity=20_000, clients=6_000)
    run(controller, process, 15)  # settled near 1,000 connections
    process.capacity = 2_000  # a noisy neighbour, or a slower host: 10 times slower
    limits = run(controller, process, 2)
    assert limits[4] <= controller.law.initial // 2  # half within half a second
    assert max(limits[-5:]) <= 2_000 * LAW.target_delay_s * (1 + LAW.tolerance) * 1.5


def test_the_floor_recovers_when_the_delay_is_gone() -> None:
    law = LimitLaw(initial=LimitLaw().minimum)  # start on the floor
    controller = AdaptiveLimit(law)
    process = Process(capacity=20_000, clients=6_000)
    limits = run(controller, process, 8)  # ×1.5 a second: 64 -> 750 in 7 s
    assert limits[0] < 100 and limits[-1] >= 20_000 * law.target_delay_s * (1 - law.tolerance)


def test_the_limit_holds_still_on_a_constant_load() -> None:
    controller = AdaptiveLimit()
    process = Process(capacity=6_000, clients=3_000)
    run(controller, process, 10)
    settled = run(controller, process, 20)
    assert max(settled) - min(settled) <= 0.02 * max(settled), settled  # no oscillation
    steps = [b - a for a, b in itertools.pairwise(settled) if b != a]
    reversals = sum(1 for a, b in itertools.pairwise(steps) if (a > 0) != (b > 0))
    assert reversals == 0, settled


def test_people_who_wait_between_polls_are_not_counted_as_queue() -> None:
    """8,000 people polling every 5 s need 1,600 polls/s; a process that answers 1,000/s can
    keep capacity × (W* + think) of them at the target delay, not capacity × W* (50)."""
    controller = AdaptiveLimit()
    process = Process(capacity=1_000, clients=8_000, think_s=5.0)
    run(controller, process, 30)
    fit = 1_000 * (LAW.target_delay_s + 5.0)
    assert fit * 0.9 <= controller.limit <= fit * 1.1, controller.limit


def test_a_process_with_room_takes_everyone_who_polls() -> None:
    controller = AdaptiveLimit()
    process = Process(capacity=10_000, clients=7_000, think_s=5.0)  # 1,400 polls/s: room
    run(controller, process, 10)
    assert controller.limit >= 7_000


def test_a_late_loop_in_a_process_that_is_not_busy_is_not_blamed_on_its_connections() -> None:
    """400 people polling every 2 s cost a process that answers 10,000/s 2% of its time; its
    loop is 100 ms late because other processes hold the CPU. Shedding them would not help."""
    controller = AdaptiveLimit()
    process = Process(capacity=10_000, clients=400, think_s=2.0, outside_delay_s=0.1)
    run(controller, process, 30)
    assert controller.limit >= 400 and controller.busy < 0.05
    assert controller.measured_delay_s > 0.09 and controller.delay_s < LAW.target_delay_s


def test_an_idle_process_does_not_creep_to_the_maximum() -> None:
    controller = AdaptiveLimit()
    process = Process(capacity=10_000, clients=50, think_s=1.0)
    run(controller, process, 60)
    assert controller.limit == LAW.initial  # it never bound, so it never grew


def test_the_limit_never_leaves_its_bounds() -> None:
    law = LimitLaw(minimum=64, maximum=5_000, initial=500)
    controller = AdaptiveLimit(law)
    rng = random.Random(23)
    at, completed, turned_away, cpu = 0.0, 0, 0, 0.0
    for _ in range(5_000):
        at += rng.choice([0.0, 0.001, 0.1, 0.5, 3.0])  # repeated times too
        completed += rng.choice([0, 10, 10_000, -5])  # a counter reset too
        delay = rng.choice([0.0, 0.01, 0.05, 0.2, 5.0, -1.0])
        turned_away += rng.choice([0, 0, 1, 1_000])
        cpu += rng.choice([0.0, 0.01, 1.0, -0.5])  # a process's CPU time, and nonsense
        measured = Measurement(
            at, completed, delay, rng.randint(0, 20_000), turned_away, rng.choice([cpu, None])
        )
        assert law.minimum <= controller.update(measured) <= law.maximum


def test_a_step_is_bounded_both_ways() -> None:
    controller = AdaptiveLimit(LimitLaw(initial=1_000))
    controller.update(Measurement(0.0, 0, 0.0, 1_000))
    # a huge delay at a huge throughput would want 0: at most half goes in one update
    assert controller.update(Measurement(0.1, 1_000_000, 100.0, 1_000)) >= 500
    grown = AdaptiveLimit(LimitLaw(initial=1_000))
    grown.update(Measurement(0.0, 0, 0.0, 1_000))
    # no delay at all at a huge throughput would want far more: nothing before the averages
    # know something, then at most +50% in one step, and the next step only once the
    # averages have seen this one (growth_hold_s later)
    assert grown.update(Measurement(0.5, 1_000_000, 0.0, 1_000, turned_away=1)) == 1_000
    assert grown.update(Measurement(1.0, 2_000_000, 0.0, 1_000, turned_away=2)) == 1_500
    assert grown.update(Measurement(1.5, 3_000_000, 0.0, 1_500, turned_away=3)) == 1_500
    assert grown.update(Measurement(2.0, 4_000_000, 0.0, 1_500, turned_away=4)) == 2_250
    # and never while the delay measured just now is over the target, however low its average
    just_now = LAW.target_delay_s * 1.1
    assert grown.update(Measurement(3.0, 5_000_000, 0.0, 2_250, turned_away=5)) == 3_375
    assert grown.update(Measurement(4.1, 6_000_000, just_now, 3_375, turned_away=6)) == 3_375


def test_the_law_refuses_constants_that_cannot_work() -> None:
    with pytest.raises(ValueError):
        LimitLaw(minimum=0)
    with pytest.raises(ValueError):
        LimitLaw(minimum=100, initial=50)
    with pytest.raises(ValueError):
        LimitLaw(target_delay_s=0)
    with pytest.raises(ValueError):
        LimitLaw(max_decrease=1.0)
