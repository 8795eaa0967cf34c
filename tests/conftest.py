"""Fixtures shared by every test: real Redis servers on free loopback ports.

``redis_server`` is one redis-server; ``redis_cluster`` a 3-master, 3-replica Redis Cluster;
``sentinel_set`` a primary, a replica and three Sentinels. Each is started once per session,
only when a test asks for it, and stopped by PID at the end. ``any_redis`` is an empty
database on each of the three topologies in turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from controlplane.runtime.redis_cluster import RedisClusterNodes
from controlplane.runtime.redis_sentinel import SentinelSet
from controlplane.runtime.redis_server import RedisServer
from controlplane.store import RedisClient, Store, connect
from controlplane.store.config import RedisSettings, RedisTopology


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session, started here and stopped by PID at the end."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """A real Redis Cluster: 3 masters with a replica each, for the session."""
    with RedisClusterNodes(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sentinel_set() -> Iterator[SentinelSet]:
    """A real Sentinel set-up: primary, replica, 3 Sentinels, for the session."""
    with SentinelSet() as sentinels:
        yield sentinels


def settings_for(request: pytest.FixtureRequest, topology: RedisTopology) -> RedisSettings:
    """Settings that reach the session's server of ``topology`` (started on first use)."""
    match topology:
        case RedisTopology.SINGLE:
            return RedisSettings(url=request.getfixturevalue("redis_server").url)
        case RedisTopology.CLUSTER:
            return RedisSettings(cluster_nodes=request.getfixturevalue("redis_cluster").addresses)
        case RedisTopology.SENTINEL:
            sentinels: SentinelSet = request.getfixturevalue("sentinel_set")
            return RedisSettings(
                sentinels=sentinels.addresses, sentinel_master=sentinels.master_name
            )


async def emptied(client: RedisClient) -> RedisClient:
    if isinstance(client, RedisCluster):
        await client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.flushdb()
    return client


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client on an empty database."""
    client = connect(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(params=list(RedisTopology))
async def any_redis(request: pytest.FixtureRequest) -> AsyncIterator[RedisClient]:
    """A client on an empty database of each topology: single server, Cluster, Sentinel."""
    client = await emptied(connect(settings_for(request, request.param)))
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> Store:
    return Store(redis)
