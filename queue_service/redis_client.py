"""The one place a Redis client is built: a single server or a Redis Cluster, chosen by the URL.

    redis://[user:password@]host:port/0             one Redis server (or a proxy in front of one)
    rediss://...                                    the same over TLS
    redis+cluster://[user:password@]host:port[,host:port...]
    rediss+cluster://...                            a Redis Cluster, over TLS

For a cluster, the listed nodes are only seeds: the client asks them for the slot map and then
talks to every master directly. List more than one seed so a process can start while one node
is down. A cluster has only database 0. The service works unchanged on a cluster because every
key of one wave carries the hash tag `{w:<wave>}` (one slot, so one node runs a wave's scripts
atomically) and the few global keys are read and written one command at a time.
"""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from queue_service.settings import Settings

RedisClient: TypeAlias = Redis | RedisCluster
"""Both clients take the same commands for what the service does: scripts with keys (routed
by the slot of the first key), single-key commands, PING and INFO (the default node)."""

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
MAX_CONNECTIONS = 512
"""Per process for a single server; per node for a cluster."""
HEALTH_CHECK_INTERVAL_S = 30


class InvalidRedisUrl(ValueError):
    pass


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster URL as (the `redis://` URL of its first seed, as redis-py wants it, and the
    (host, port) of every further seed)."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise InvalidRedisUrl(f"not a Redis Cluster URL: {url!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds = [h.strip() for h in hosts.split(",") if h.strip()]
    if not seeds:
        raise InvalidRedisUrl(f"no cluster node in {url!r}")
    if parts.path not in ("", "/", "/0"):
        raise InvalidRedisUrl(f"a Redis Cluster has only database 0, not {parts.path!r}")
    netloc = f"{userinfo}@{seeds[0]}" if userinfo else seeds[0]
    first = urlunsplit((scheme, netloc, "/0", parts.query, ""))
    return first, [_host_port(seed, url) for seed in seeds[1:]]


def _host_port(seed: str, url: str) -> tuple[str, int]:
    # urlsplit understands bracketed IPv6 literals; reuse it rather than split by hand
    parsed = urlsplit(f"//{seed}")
    try:
        port = parsed.port or 6379
    except ValueError:
        raise InvalidRedisUrl(f"bad port in cluster node {seed!r} of {url!r}") from None
    if not parsed.hostname:
        raise InvalidRedisUrl(f"bad cluster node {seed!r} in {url!r}")
    return parsed.hostname, port


def connect_redis(settings: Settings) -> RedisClient:
    """A client for `settings.redis_url`; no connection is opened until the first command."""
    url = settings.redis_url
    if not url:
        raise ValueError("redis_url is not set (serve starts an embedded Redis when it is absent)")
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
        "retry": Retry(NoBackoff(), 1),  # one immediate retry for a stale pooled connection
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "max_connections": MAX_CONNECTIONS,
    }
    if not is_cluster_url(url):
        return Redis.from_url(url, **timeouts)
    first, more = cluster_seeds(url)
    return RedisCluster.from_url(
        first, startup_nodes=[ClusterNode(host, port) for host, port in more], **timeouts
    )
