"""Lua and Python agree on every reply code by construction: the code tables are generated from
`queue_service/protocol.py` into the prelude of every script, no script defines one of its
own, every script declares its keys, and Python decodes replies with the same enums."""

from __future__ import annotations

import json
import re
from enum import IntEnum
from importlib import resources

import pytest
import redis

from queue_service import metrics
from queue_service.protocol import (
    JOIN_RESULTS,
    TICKET_STATES,
    HolderState,
    JoinResult,
    SeenMark,
    TicketState,
    WaveState,
    lua_prelude,
)
from queue_service.redis_server import EmbeddedRedis

LUA = resources.files("queue_service") / "lua"
TABLES = {"TICKET_STATE": TicketState, "JOIN_RESULT": JoinResult, "WAVE_STATE": WaveState}


def scripts() -> dict[str, str]:
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in LUA.iterdir()
        if entry.name.endswith(".lua")
    }


@pytest.mark.parametrize("table", sorted(TABLES))
def test_redis_reads_every_code_of_the_prelude_as_python_defines_it(
    redis_server: EmbeddedRedis, table: str
) -> None:
    enum = TABLES[table]
    source = lua_prelude() + "return {" + ", ".join(
        f"{table}.{m.name.lower()}" for m in enum
    ) + "}"  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)
    try:
        codes = client.eval(source, 0)
    finally:
        client.close()
    assert codes == [int(m) for m in enum]


def test_the_seen_marks_of_the_prelude_are_pythons(redis_server: EmbeddedRedis) -> None:
    source = lua_prelude() + "return {" + ", ".join(
        f"SEEN.{m.name.lower()}" for m in SeenMark
    ) + "}"  # fmt: skip
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert client.eval(source, 0) == [m.value for m in SeenMark]
    finally:
        client.close()


def test_no_script_defines_a_code_table_of_its_own() -> None:
    own_table = re.compile(r"\b(?:local\s+)?(TICKET_STATE|JOIN_RESULT|WAVE_STATE|SEEN)\w*\s*=")
    for name, text in scripts().items():
        assert not own_table.search(text), name


def test_every_script_declares_its_keys_in_its_header() -> None:
    """The wave's fixed keys are KEYS; the per-ticket bucket keys are built under the wave's
    prefix (same hash slot), and _lib.lua says why."""
    texts = scripts()
    assert "cannot be named before the call" in texts["_lib.lua"]
    for name, text in texts.items():
        if name == "_lib.lua":
            continue
        header = text.split("\n\n", 1)[0]
        assert re.search(r"^-- KEYS", header, re.MULTILINE), name
        # every key a script builds itself starts with the wave's prefix
        for built in re.findall(r"redis\.call\('\w+', '([^']*)'", text):
            pytest.fail(f"{name}: a literal key {built!r} outside the wave's prefix")


@pytest.mark.parametrize("enum, table", [(TicketState, TICKET_STATES), (JoinResult, JOIN_RESULTS)])
def test_reply_codes_decode_to_their_members(
    enum: type[IntEnum], table: tuple[IntEnum, ...]
) -> None:
    assert [table[int(m)] for m in enum] == list(enum)
    assert len(table) == len(enum)


def test_the_states_a_holder_is_told_are_the_documented_ones() -> None:
    """Clients parse answers into `HolderState` (simulator.client): it is the OpenAPI
    document's TicketState and the metrics' ticket states, no more and no fewer."""
    document = json.loads((resources.files("queue_service") / "static/openapi.json").read_text())
    documented = document["components"]["schemas"]["TicketState"]["enum"]
    assert [s.value for s in HolderState] == documented
    assert set(metrics.TICKET_STATES) == set(documented)
