"""One client for any of the three Redis topologies: a single server, a Cluster, Sentinel.

The store above this module is the same for all three because every multi-key operation it
issues (script, transaction, pipeline) touches the keys of one service, i.e. one hash slot.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from controlplane.store.config import RedisSettings, RedisTopology

RedisClient: TypeAlias = Redis | RedisCluster
"""What the store talks to; both expose the same command methods."""

_HEALTH_CHECK_INTERVAL_S = 10


def connect(
    target: str | RedisSettings, *, max_connections: int = 64, timeout_s: float = 5.0
) -> RedisClient:
    """A client for a Redis URL, or for whichever topology ``target`` settings choose."""
    settings = RedisSettings(url=target) if isinstance(target, str) else target
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    if settings.password is not None:
        common["password"] = settings.password.get_secret_value()
    match settings.topology:
        case RedisTopology.SINGLE:
            return _single(settings.url, common, max_connections, timeout_s)
        case RedisTopology.CLUSTER:
            return _cluster(settings.cluster_nodes, common, max_connections)
        case RedisTopology.SENTINEL:
            assert settings.sentinel_master is not None  # the settings validate this
            pooling = {"max_connections": max_connections, "timeout": timeout_s}
            return _sentinel(settings, settings.sentinel_master, common | pooling)


def _single(url: str, common: dict[str, Any], max_connections: int, timeout_s: float) -> Redis:
    # Callers wait for a free connection instead of failing when all are busy.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        health_check_interval=_HEALTH_CHECK_INTERVAL_S,
        **common,
    )
    return Redis.from_pool(pool)  # the client owns the pool and closes it


def _cluster(seeds: list[str], common: dict[str, Any], max_connections: int) -> RedisCluster:
    # The cluster client cannot queue for a connection (it raises MaxConnectionsError), so
    # each node gets head-room well above what the manager's coalesced calls keep in flight.
    return RedisCluster(
        startup_nodes=[ClusterNode(*_host_port(seed)) for seed in seeds],
        max_connections=max(max_connections, 512),
        health_check_interval=_HEALTH_CHECK_INTERVAL_S,
        **common,
    )


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Asks the Sentinels for the primary, and queues callers when every connection is busy
    (redis-py's own Sentinel pool raises instead), like the single-server client."""


class _SentinelManagedRedis(Redis):
    """The primary's client; closing it closes the Sentinel clients it asks, too."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


def _sentinel(settings: RedisSettings, master: str, common: dict[str, Any]) -> Redis:
    sentinel_options = {k: v for k, v in common.items() if k.startswith("socket_")}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [_host_port(address) for address in settings.sentinels],
        sentinel_kwargs=sentinel_options,
    )
    client: _SentinelManagedRedis = sentinel.master_for(
        master,
        redis_class=_SentinelManagedRedis,
        connection_pool_class=_BlockingSentinelPool,
        db=settings.sentinel_db,
        health_check_interval=_HEALTH_CHECK_INTERVAL_S,
        **common,
    )
    client.sentinel_manager = sentinel
    return client


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)
