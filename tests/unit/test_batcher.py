"""The coalescer behind join and status: one script call per wave per round trip, in arrival
order, never two batches of a wave at once, and failures reach exactly their own batch."""

from __future__ import annotations

import asyncio

import pytest

from queue_service.batcher import Coalescer


class Recorder:
    """A flush that records its batches and can be held open like a slow Redis call."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.running: dict[str, int] = {}
        self.most_at_once = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False

    async def flush(self, key: str, items: list[int]) -> list[int]:
        self.batches.append((key, list(items)))
        self.running[key] = self.running.get(key, 0) + 1
        self.most_at_once = max(self.most_at_once, self.running[key])
        try:
            await self.gate.wait()
            if self.fail_next:
                self.fail_next = False
                raise ConnectionError("redis went away")
            return [item * 10 for item in items]
        finally:
            self.running[key] -= 1


async def test_one_iteration_is_one_batch_per_key_in_arrival_order() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, int, int] = Coalescer("test", recorder.flush)
    futures = [coalescer.submit("w1" if i % 3 else "w2", i) for i in range(9)]
    assert await asyncio.gather(*futures) == [i * 10 for i in range(9)]
    assert sorted(recorder.batches) == [("w1", [1, 2, 4, 5, 7, 8]), ("w2", [0, 3, 6])]


async def test_a_waves_batches_never_overlap_and_later_requests_go_together() -> None:
    recorder = Recorder()
    recorder.gate.clear()  # the first call stalls like a slow round trip
    coalescer: Coalescer[str, int, int] = Coalescer("test", recorder.flush)
    first = coalescer.submit("w", 1)
    await asyncio.sleep(0.01)
    later = [coalescer.submit("w", i) for i in (2, 3)]
    await asyncio.sleep(0.01)
    more = [coalescer.submit("w", i) for i in (4, 5)]
    await asyncio.sleep(0.01)
    assert recorder.batches == [("w", [1])]  # nothing else left while it was in flight
    recorder.gate.set()
    assert await asyncio.gather(first, *later, *more) == [10, 20, 30, 40, 50]
    assert recorder.batches == [("w", [1]), ("w", [2, 3, 4, 5])]
    assert recorder.most_at_once == 1


async def test_the_next_batch_leaves_before_the_answers_ahead_are_consumed() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer: Coalescer[str, int, int] = Coalescer("test", recorder.flush)
    first = coalescer.submit("w", 1)
    await asyncio.sleep(0.01)
    second = coalescer.submit("w", 2)
    await asyncio.sleep(0.01)
    batches_when_first_resumed: list[int] = []

    async def consume_first() -> None:
        await first
        batches_when_first_resumed.append(len(recorder.batches))

    consumer = asyncio.create_task(consume_first())
    await asyncio.sleep(0)
    recorder.gate.set()
    await asyncio.gather(consumer, second)
    assert batches_when_first_resumed == [2]


async def test_a_failed_call_fails_its_own_batch_only() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer: Coalescer[str, int, int] = Coalescer("test", recorder.flush)
    doomed = [coalescer.submit("w", i) for i in (1, 2)]
    await asyncio.sleep(0.01)
    survivor = coalescer.submit("w", 3)
    recorder.fail_next = True
    recorder.gate.set()
    for future in doomed:
        with pytest.raises(ConnectionError):
            await future
    assert await survivor == 30


async def test_big_bursts_are_split_and_keep_their_order() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, int, int] = Coalescer("test", recorder.flush, max_batch=4)
    assert await asyncio.gather(*(coalescer.submit("w", i) for i in range(10))) == [
        i * 10 for i in range(10)
    ]
    assert [items for _, items in recorder.batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert recorder.most_at_once == 1


async def test_drain_waits_for_queued_batches() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer: Coalescer[str, int, int] = Coalescer("test", recorder.flush)
    futures = [coalescer.submit("w", 1)]
    await asyncio.sleep(0.01)
    futures.append(coalescer.submit("w", 2))
    asyncio.get_running_loop().call_later(0.05, recorder.gate.set)
    await coalescer.drain()
    assert all(future.done() for future in futures)
    assert [items for _, items in recorder.batches] == [[1], [2]]
