"""`gelombang plan` for a wave with call-backs: the messages by channel, in total and in the
busiest hour, each printed number counted again from the model run it came from."""

from __future__ import annotations

import argparse
import re

import pytest

from simulator import message_load
from simulator.commands import plan
from simulator.records import RunRecord
from tests.helpers.paths import TEST_SCENARIOS

SCENARIO = TEST_SCENARIOS / "callbacks.toml"


def messages_of(record: RunRecord) -> dict[str, int]:
    """Counted from the people: 'near' when told before the line reached them, 'turn' when it
    reached them while away."""
    counts: dict[str, int] = {}
    for o in record.registrants:
        if o.callback_channel is None:
            continue
        sent = (o.notified_t is not None) + (o.called_t is not None and o.called_t != o.notified_t)
        counts[o.callback_channel] = counts.get(o.callback_channel, 0) + sent
    return counts


def test_the_busiest_hour_is_a_sliding_window() -> None:
    per_minute = [0] * 180
    per_minute[50:70] = [10] * 20  # 200 messages across the first hour's end
    assert message_load.busiest_hour(per_minute, 60.0) == 200
    per_minute[130] = 5
    assert message_load.busiest_hour(per_minute, 60.0) == 200
    assert message_load.busiest_hour([3, 4], 60.0) == 7  # shorter than an hour: all of it


def test_plan_prints_the_messages_by_channel_of_its_model_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[RunRecord] = []
    counted = message_load.message_load

    def keep(record: RunRecord) -> list[message_load.ChannelLoad]:
        seen.append(record)
        return counted(record)

    monkeypatch.setattr(message_load, "message_load", keep)
    parser = argparse.ArgumentParser()
    plan.add_arguments(parser)
    args = parser.parse_args(["--scenario", str(SCENARIO), "--hours", "0.012", "--quiet"])
    assert plan.run(args) == 0
    out = capsys.readouterr().out
    (record,) = seen
    assert record.meta.sample_every == 1  # every person recorded: a full count
    expected = messages_of(record)
    assert set(expected) == {"sms", "whatsapp"}
    found = re.findall(r"^  (sms|whatsapp|all) +([\d,]+) +([\d,]+)$", out, re.MULTILINE)
    rows = {k: (int(a.replace(",", "")), int(b.replace(",", ""))) for k, a, b in found}
    # a 50 s run: its busiest hour is all of it
    assert rows == {k: (n, n) for k, n in {**expected, "all": sum(expected.values())}.items()}
    callbacks = record.totals.callbacks
    assert callbacks is not None
    opted = sum(o.opted_in_t is not None for o in record.registrants)
    told = sum(o.notified_t is not None for o in record.registrants)
    assert f"{opted:,} people opted in, {told:,} were called back" in out
    # the command that creates the wave carries its notify object, as JSON
    assert '--set \'notify={"channels":["sms","whatsapp"],"lead_s":60.0' in out
