"""The route manager on a real Redis Cluster: services spread over the masters, each service's
routing, failover, migration and history served by the one node that holds its slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from controlplane.domain import HealthReport, PodState, RouteRequest, ServiceKey
from controlplane.manager import StatefulRouteManager
from controlplane.runtime.redis_cluster import RedisClusterNodes
from controlplane.store import Store
from controlplane.store.config import RedisSettings

from .failover_load import KEY, NS, SVC, registered
from .test_cluster_failover import assert_consistent


@pytest.fixture
async def manager(redis_cluster: RedisClusterNodes) -> AsyncIterator[StatefulRouteManager]:
    store = Store.from_settings(RedisSettings(cluster_nodes=redis_cluster.addresses))
    for key in await store.registry.service_keys():
        await store.registry.delete_service(key)
    manager = await registered(store)
    yield manager
    await manager.close()
    await store.close()


async def route(manager: StatefulRouteManager, uid: str, service: str = SVC) -> int:
    request = RouteRequest(namespace=NS, service=service, uid=uid)
    return (await manager.route_request(request)).pod_index


async def test_users_of_a_failed_pod_move_and_the_event_is_recorded(
    manager: StatefulRouteManager,
) -> None:
    before = await asyncio.gather(*(route(manager, f"u{i}") for i in range(400)))
    on_failed = before.count(2)
    event = await manager.handle_pod_failure(KEY, 2, reason="crashed")
    assert event is not None
    assert event.affected_users == on_failed > 0
    after = await asyncio.gather(*(route(manager, f"u{i}") for i in range(400)))
    assert 2 not in after
    assert [a for a, b in zip(after, before, strict=True) if b != 2] == [
        b for b in before if b != 2
    ]
    assert (await manager.get_failover_history(KEY))[0] == event
    await assert_consistent(manager.store)


async def test_failed_health_checks_mark_a_pod_down_once(manager: StatefulRouteManager) -> None:
    down = HealthReport(is_healthy=False, reason="connect refused")
    states = [(await manager.update_pod_health(KEY, 0, down)).health.state for _ in range(3)]
    assert states == [PodState.SUSPECT, PodState.SUSPECT, PodState.DOWN]


async def test_a_migrated_user_stays_on_its_new_pod(manager: StatefulRouteManager) -> None:
    first = await route(manager, "alice")
    target = (first + 1) % 4
    await manager.migrate_user(KEY, "alice", target)
    assert await route(manager, "alice") == target
    await assert_consistent(manager.store)


async def test_services_spread_over_the_masters(
    manager: StatefulRouteManager, redis_cluster: RedisClusterNodes
) -> None:
    store = manager.store
    names = [f"svc{i}" for i in range(12)]
    nodes = {
        redis_cluster.node_of_slot(key_slot(store.keys(ServiceKey(NS, n)).bindings.encode())).port
        for n in names
    }
    assert len(nodes) == 3
