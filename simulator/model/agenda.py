"""The model's future events in time order: a heap for the current tick and a bucket for each
later tick (a calendar queue), so that millions of patience timers do not make every heap
operation slow.

An event is `(t, kind, ticket, detail)`; events at the same instant are handled in the order
of their kind: a slot freed first, then a flow ended, an admission noticed, a return, a
call-back's return window ending, a return by the call-back's link.
"""

from __future__ import annotations

import heapq

# Events, handled in this order at the same instant.
SLOT_FREED, FLOW_ENDED, NOTICED, CAME_BACK, WINDOW_ENDS, CALLED_BACK_RETURN = range(6)

Event = tuple[float, int, int, int]


class Agenda:
    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self.heap: list[Event] = []
        self.later: dict[int, list[Event]] = {}
        self.loaded_until = 0.0  # events before this time are in the heap

    def push(self, event: Event) -> None:
        if event[0] < self.loaded_until:
            heapq.heappush(self.heap, event)
            return
        bucket = int(event[0] // self.tick_s)
        items = self.later.get(bucket)
        if items is None:
            self.later[bucket] = [event]
        else:
            items.append(event)

    def load(self, bucket: int) -> None:
        """Called at the start of tick `bucket`: its events join the heap."""
        self.loaded_until = (bucket + 1) * self.tick_s
        items = self.later.pop(bucket, None)
        if items:
            heap = self.heap
            for event in items:
                heapq.heappush(heap, event)
