"""The call-back figures of a run, one definition for the live driver and the model (issue 24):

- `opted_in`: people who left the line to be called back;
- `called_back`: of them, people a message reached (their turn is near, or it is their turn);
- `came_back`, `came_back_in_time`: back by the return link, and of them while their place
  held (not reached yet, within the return window once called, or before an admission made
  while they were away lapsed); `came_back_late`: after it ended;
- `not_returned`: places skipped when the return window ended with nobody back;
- `away_hours`: person-hours not spent polling the waiting page: from opting in to coming
  back (or to the end of the window, or of the run, for those who meant to come back and had
  not); those who never meant to come back spared nothing and are not counted;
- `messages`: messages sent, by channel.

The live driver records every registrant, so its totals are counted from the outcomes
(`callback_totals`); the model counts every person as it goes (`simulator.model.callbacks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.records import RegistrantOutcome, TimeSeries

CALLBACK_KEYS = (
    "opted_in",
    "called_back",
    "came_back",
    "came_back_in_time",
    "came_back_late",
    "not_returned",
    "away_hours",
)


def away_s(o: RegistrantOutcome, end_s: float) -> float:
    """Seconds this registrant did not spend on the page thanks to the call-back."""
    if o.opted_in_t is None:
        return 0.0
    if o.returned_t is not None:
        return o.returned_t - o.opted_in_t
    if o.gave_up_reason == "abandoned" and o.gave_up_t == o.opted_in_t:
        return 0.0  # never meant to come back
    stop = o.gave_up_t if o.gave_up_t is not None else end_s
    return max(0.0, min(stop, end_s) - o.opted_in_t)


def skipped_not_returned(o: RegistrantOutcome) -> bool:
    """Called, and the return window ended with nobody back (they gave up there, not when
    they opted in)."""
    return (
        o.called_t is not None
        and o.returned_t is None
        and o.gave_up_reason == "abandoned"
        and o.gave_up_t is not None
        and o.gave_up_t > o.called_t
    )


def callback_totals(
    outcomes: Sequence[RegistrantOutcome], series: TimeSeries
) -> dict[str, Any] | None:
    opted = [o for o in outcomes if o.opted_in_t is not None]
    if not opted:
        return None
    end_s = len(series) * series.step_s
    return {
        "opted_in": len(opted),
        "called_back": sum(o.notified_t is not None for o in opted),
        "came_back": sum(o.returned_t is not None for o in opted),
        "came_back_in_time": sum(o.returned_in_time is True for o in opted),
        "came_back_late": sum(o.returned_in_time is False for o in opted),
        "not_returned": sum(map(skipped_not_returned, opted)),
        "away_hours": round(sum(away_s(o, end_s) for o in opted) / 3600.0, 3),
        "messages": {k: sum(v) for k, v in series.messages.items() if sum(v)},
    }
