from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.helpers.support import admit, join_ok, poll_ok, put_wave


async def test_join_then_admission_gives_a_token(client: TestClient) -> None:
    await put_wave(client, "w1", admit_rate=1)
    first = await join_ok(client, "w1", "alice")
    assert first["position"] == 1
    step = await admit(client, "w1")
    assert [a.seq for a in step.admitted] == [1]
    view = await poll_ok(client, "w1", first["ticket"])
    assert view["state"] == "admitted"
    assert "gelombang_token=" in view["redirect"]
