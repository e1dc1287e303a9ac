"""Redis URLs: a single server or a Redis Cluster's seed nodes, and a cluster nobody answers
(the cluster itself runs in tests/e2e/test_redis_cluster.py)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis, RedisCluster

from queue_service.errors import StoreUnavailable
from queue_service.redis_client import InvalidRedisUrl, cluster_seeds, connect_redis
from queue_service.redis_server import free_port
from queue_service.settings import Settings
from queue_service.store import Store


async def test_an_unreachable_cluster_is_store_unavailable_not_a_crash() -> None:
    settings = Settings(redis_url=f"redis+cluster://127.0.0.1:{free_port()}", redis_timeout_s=1)
    client = connect_redis(settings)
    assert isinstance(client, RedisCluster)
    store = Store(client, clock=None, timeout_s=2)
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await client.aclose()


def test_plain_urls_still_make_a_single_server_client() -> None:
    client = connect_redis(Settings(redis_url="redis://127.0.0.1:7/0"))
    assert isinstance(client, Redis)


@pytest.mark.parametrize(
    ("url", "first", "more"),
    [
        ("redis+cluster://10.0.0.1:7000", "redis://10.0.0.1:7000/0", []),
        (
            "rediss+cluster://u:p%40ss@a.example:7000,b.example:7001,[::1]:7002/0?ssl_cert_reqs=none",
            "rediss://u:p%40ss@a.example:7000/0?ssl_cert_reqs=none",
            [("b.example", 7001), ("::1", 7002)],
        ),
    ],
)
def test_cluster_urls_become_seed_nodes(url: str, first: str, more: list[tuple[str, int]]) -> None:
    assert cluster_seeds(url) == (first, more)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://10.0.0.1:7000/2",
        "redis+cluster://",
        "redis+cluster://a:1,b:port",
        "redis://a",
    ],
)
def test_bad_cluster_urls_are_refused_clearly(url: str) -> None:
    with pytest.raises(InvalidRedisUrl):
        cluster_seeds(url)
