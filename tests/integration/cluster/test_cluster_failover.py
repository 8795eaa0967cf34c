"""kill -9 of the Redis primary holding a service, under load: the client follows the
promoted replica, on a Redis Cluster and with Sentinel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from controlplane.runtime.redis_cluster import RedisClusterNodes
from controlplane.runtime.redis_sentinel import SentinelSet
from controlplane.store import Store
from controlplane.store.config import RedisSettings

from .failover_load import KEY, FailoverReport, registered, route_through_failover

pytestmark = pytest.mark.redis_failover

RECOVERY_BOUND_S = 10.0


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterNodes]:
    """A cluster of its own: the test kills one of its masters."""
    with RedisClusterNodes(masters=3, replicas=1, appendonly=True) as cluster:
        yield cluster


@pytest.fixture
def own_sentinel_set() -> Iterator[SentinelSet]:
    with SentinelSet(appendonly=True) as sentinels:
        yield sentinels


async def assert_recovered(store: Store, report: FailoverReport, topology: str) -> None:
    print(report.line(topology))  # the figures docs/operations.md quotes (pytest -s)
    assert report.failed < report.requests
    assert report.recovery_s < RECOVERY_BOUND_S
    # The replica had nearly everything: at most the last replication round trip is lost.
    assert len(report.lost) <= max(5, len(report.acknowledged) // 100)
    await assert_consistent(store)


async def assert_consistent(store: Store, pods: int = 4) -> None:
    """The reverse index names exactly the forward bindings."""
    keys = store.keys(KEY)
    forward = {uid: pod async for uid, pod in store.bindings.scan(keys)}
    reverse = {uid: pod for pod in range(pods) async for uid in store.bindings.users_of(keys, pod)}
    assert forward == reverse


async def test_cluster_client_follows_the_promoted_replica_of_a_killed_master(
    own_cluster: RedisClusterNodes,
) -> None:
    store = Store.from_settings(RedisSettings(cluster_nodes=own_cluster.addresses))
    manager = await registered(store)
    victim = own_cluster.node_of_slot(key_slot(store.keys(KEY).bindings.encode()))
    try:
        report = await route_through_failover(manager, victim.kill)
        assert own_cluster.node_of_slot(key_slot(store.keys(KEY).bindings.encode())) != victim
        await assert_recovered(store, report, "cluster")
    finally:
        await manager.close()
        await store.close()


async def test_sentinel_client_follows_the_promoted_replica_of_a_killed_primary(
    own_sentinel_set: SentinelSet,
) -> None:
    settings = RedisSettings(
        sentinels=own_sentinel_set.addresses, sentinel_master=own_sentinel_set.master_name
    )
    store = Store.from_settings(settings)
    manager = await registered(store)
    victim = own_sentinel_set.current_primary()
    try:
        report = await route_through_failover(manager, victim.kill)
        assert own_sentinel_set.current_primary() != victim
        await assert_recovered(store, report, "sentinel")
    finally:
        await manager.close()
        await store.close()
