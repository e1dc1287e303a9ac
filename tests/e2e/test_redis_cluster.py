"""The queue service on a real Redis Cluster: three masters on loopback, the real app pointed at
them with a `redis+cluster://` URL. Waves whose hash tags land on different masters each work
end to end, and a guarantee (the quota) holds on a cluster node as it does on one server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loadtests.bench.cluster import LocalCluster, local_cluster
from queue_service import metrics
from queue_service.app import create_app
from queue_service.clock import ManualClock
from queue_service.http.appkeys import STORE
from queue_service.keys import WaveKeys
from queue_service.ratelimit import RateLimitRules
from queue_service.settings import Settings
from queue_service.tokens import KeyRing
from tests.helpers.support import (
    ADMIN,
    ADMIN_TOKEN,
    NEVER_SHED,
    T0,
    admin_view,
    admit,
    join,
    join_ok,
    poll_ok,
    put_wave,
)
from tests.helpers.tools import require_tool

MASTERS = 3
# Candidate wave ids; the test keeps the first one whose slot each master owns.
CANDIDATE_WAVES = [f"cpns-{region}" for region in ("aceh", "bali", "jambi", "maluku", "papua")] + [
    f"kip-{n}" for n in range(20)
]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    require_tool("redis-server", package="redis-server")
    require_tool("redis-cli", package="redis-tools")
    with local_cluster(tmp_path_factory.mktemp("redis-cluster"), MASTERS) as running:
        yield running


@pytest.fixture
async def cluster_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], cluster: LocalCluster, tmp_path: Path
) -> TestClient:
    """The real app on the cluster, on a manual clock, admission stepped by hand."""
    settings = Settings(
        redis_url=cluster.url,
        admin_token=ADMIN_TOKEN,
        state_dir=tmp_path,
        log_format="text",
        rate_limits=RateLimitRules(enabled=False),
        redis_timeout_s=5.0,
        **NEVER_SHED,
    )
    keyring = KeyRing.from_keys(Ed25519PrivateKey.generate())
    app = create_app(settings, clock=ManualClock(T0), keyring=keyring, run_admission=False)
    return await aiohttp_client(app)


def _redis_errors() -> float:
    return sum(
        sample.value
        for family in metrics.redis_errors.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def _one_wave_per_master(cluster: LocalCluster) -> dict[int, str]:
    return cluster.one_wave_per_master(CANDIDATE_WAVES)


async def _wave_end_to_end(client: TestClient, wave: str) -> None:
    await put_wave(client, wave, max_active=1)
    first = await join_ok(client, wave, "ani")
    second = await join_ok(client, wave, "budi")
    assert (first["state"], first["position"]) == ("waiting", 1)
    assert (second["state"], second["position"]) == ("waiting", 2)
    # same registrant with its ticket (a refresh): same ticket
    status, again = await join(client, wave, "ani", ticket=first["ticket"])
    assert status == 200 and again["ticket"] == first["ticket"]
    assert (await poll_ok(client, wave, second["ticket"]))["ahead"] == 1

    step = await admit(client, wave)
    assert len(step.admitted) == 1  # max_active 1
    admitted = await poll_ok(client, wave, first["ticket"])
    assert admitted["state"] == "admitted" and "gelombang_token=" in admitted["redirect"]
    assert (await poll_ok(client, wave, second["ticket"]))["state"] == "waiting"

    bearer = {"Authorization": f"Bearer {admitted['token']}"}
    response = await client.post(f"/api/v1/waves/{wave}/complete", headers=bearer)
    assert response.status == 204
    ticket = {"X-Queue-Ticket": second["ticket"]}
    response = await client.post(f"/api/v1/waves/{wave}/leave", headers=ticket)
    assert response.status == 204

    step = await admit(client, wave)  # the freed slot is not spent on the one who left
    assert step.admitted == [] and step.counts.left == 1
    counts = (await admin_view(client, wave))["counts"]
    assert (counts["admitted"], counts["completed"], counts["active"]) == (1, 1, 0)
    assert counts["waiting"] == 0


async def test_waves_on_different_masters_each_work_end_to_end(
    cluster: LocalCluster, cluster_client: TestClient
) -> None:
    waves = _one_wave_per_master(cluster)
    errors_before = _redis_errors()
    assert (await cluster_client.get("/readyz")).status == 200

    # concurrently, so the client routes interleaved scripts to three nodes at once
    await asyncio.gather(*(_wave_end_to_end(cluster_client, wave) for wave in waves.values()))

    # every key of a wave is on the master that owns its tag's slot, and nowhere else
    for port, wave in waves.items():
        slot, owner = cluster.owner(WaveKeys(wave).cfg)
        assert owner == port
        stored = {p: cluster.keys_in_slot(p, slot) for p in cluster.ports}
        assert len(stored[port]) >= 4, stored  # cfg, ctl, registrant and ticket buckets at least
        assert all(key.startswith(WaveKeys(wave).prefix) for key in stored[port]), stored
        assert all(not keys for p, keys in stored.items() if p != port), stored
    # the global wave list (one key on one node) sees all of them
    listed = await cluster_client.get("/admin/v1/waves", headers=ADMIN)
    assert set(waves.values()) <= {w["wave"]["id"] for w in (await listed.json())["waves"]}
    assert _redis_errors() == errors_before  # no CROSSSLOT, MOVED loop or script error


async def test_quota_is_never_exceeded_under_concurrent_admission_on_a_cluster(
    cluster: LocalCluster, cluster_client: TestClient
) -> None:
    wave = "kuota-cluster"
    await put_wave(cluster_client, wave, admit_rate=1000, admit_burst=1000, quota=7)
    for i in range(20):
        await join_ok(cluster_client, wave, f"r{i}")
    store = cluster_client.app[STORE]
    steps = await asyncio.gather(*(store.admit(wave) for _ in range(50)))
    assert sum(len(s.admitted) for s in steps) == 7
    view = await admin_view(cluster_client, wave)
    assert view["state"] == "full" and view["counts"]["admitted"] == 7
    response = await cluster_client.post(f"/api/v1/waves/{wave}/join", json={"registrant": "x"})
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "wave_full"


async def test_call_backs_work_on_a_cluster(
    cluster: LocalCluster, cluster_client: TestClient
) -> None:
    """Opt-in, the notify step, the call, the outbox's consumer group and the return link:
    every call-back script and stream command on the wave's one slot."""
    from queue_service.http.appkeys import CALLBACKS, SERVICE

    client = cluster_client
    wave = next(iter(_one_wave_per_master(cluster).values())) + "-cb"
    notify = {"channels": ["sms"], "webhook_url": "http://127.0.0.1:9/sms", "lead_s": 600}
    await put_wave(client, wave, abandon_after_s=5, notify=notify)
    await admit(client, wave)
    await client.post(f"/admin/v1/waves/{wave}/pause", headers=ADMIN)
    ticket = (await join_ok(client, wave, "away"))["ticket"]
    opted = await client.post(
        f"/api/v1/waves/{wave}/notify",
        json={"contact": {"kind": "sms", "address": "081234567890"}},
        headers={"X-Queue-Ticket": ticket},
    )
    assert opted.status == 201, await opted.text()
    clock = client.app[SERVICE].clock
    for _ in range(20):  # past the last poll deadline, stepped as the loop steps
        clock.advance(0.5)  # type: ignore[attr-defined]
        await admit(client, wave)
    await client.post(f"/admin/v1/waves/{wave}/resume", headers=ADMIN)
    clock.advance(0.5)  # type: ignore[attr-defined]
    assert (await admit(client, wave)).callbacks.called == 1
    store = client.app[STORE]
    await store.outbox_group(wave)
    entries = await store.outbox_read(wave, "test", 10, 1000)
    assert [fields["kind"] for _, fields in entries] == ["turn"]
    assert await store.callback_record(wave, 1)
    await store.outbox_done(wave, entries[0][0])
    runtime = await client.app[SERVICE].registry.get(wave)
    code = client.app[CALLBACKS].codes.code(wave, runtime.uid, ticket.split(".")[2])
    back = await client.post(f"/api/v1/waves/{wave}/return", json={"code": code})
    assert back.status == 200 and (await back.json())["result"] == "back"
    clock.advance(0.5)  # type: ignore[attr-defined]
    assert [a.seq for a in (await admit(client, wave)).admitted] == [1]
    slot, owner = cluster.owner(WaveKeys(wave).cfg)
    assert all(key.startswith(WaveKeys(wave).prefix) for key in cluster.keys_in_slot(owner, slot))
