"""The leader lease and the sync between replicas, against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controlplane.callbacks import CallbackFuncs
from controlplane.domain import Pod, RouteRequest, Service, ServiceKey
from controlplane.manager import StatefulRouteManager
from controlplane.replicas import LeaderLease, ReplicaSync
from controlplane.store import Store
from tests.support.waiting import eventually

KEY = ServiceKey("games", "lobby")


async def test_one_replica_holds_the_lease_and_a_successor_gets_a_higher_token(
    store: Store,
) -> None:
    first = LeaderLease(store.redis, store.keyspace, "first", ttl_s=0.5)
    second = LeaderLease(store.redis, store.keyspace, "second", ttl_s=0.5)
    assert await first.try_acquire()
    assert not await second.try_acquire()
    assert await first.try_acquire()  # renewing keeps the same token
    token = first.token
    assert token is not None
    # first stops renewing, as a killed replica would: second gets the lease once it lapses
    await eventually(second.try_acquire, "the lapsed lease taken over", within_s=5)
    assert not first.is_leader()
    assert second.token is not None
    assert second.token > token
    assert not await first.try_acquire()  # the old leader comes back as a follower


async def test_a_released_lease_is_taken_at_once(store: Store) -> None:
    first = LeaderLease(store.redis, store.keyspace, "first", ttl_s=30)
    second = LeaderLease(store.redis, store.keyspace, "second", ttl_s=30)
    assert await first.try_acquire()
    await first.release()
    assert not first.is_leader()
    assert await second.try_acquire()


@pytest.fixture
async def two_replicas(
    store: Store,
) -> AsyncIterator[tuple[StatefulRouteManager, StatefulRouteManager]]:
    syncs = [ReplicaSync(store.redis, store.keyspace, f"r{i}") for i in range(2)]
    managers = [
        StatefulRouteManager(
            store,
            callbacks=CallbackFuncs(
                service_changed=sync.announce_service, users_moved=sync.announce_moves
            ),
        )
        for sync in syncs
    ]
    tasks = [
        asyncio.create_task(s.listen_forever(m.apply_remote))
        for s, m in zip(syncs, managers, strict=True)
    ]
    tasks += [asyncio.create_task(s.publish_forever()) for s in syncs]
    await managers[0].register_service(Service(namespace=KEY.namespace, name=KEY.name))
    for index in range(3):
        await managers[0].upsert_pod(KEY, Pod(index=index, host="10.0.0.1", port=9000 + index))

    async def both_subscribed() -> bool:
        [(_, listeners)] = await store.redis.pubsub_numsub(store.keyspace.replicas_channel)
        return bool(listeners == 2)

    await eventually(both_subscribed, "both replicas subscribed")
    yield managers[0], managers[1]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for manager in managers:
        await manager.close()


async def routes(manager: StatefulRouteManager) -> dict[str, int]:
    return dict(manager.sticky.routes(KEY))


async def test_a_move_on_one_replica_reaches_the_routes_of_the_other(
    two_replicas: tuple[StatefulRouteManager, StatefulRouteManager],
) -> None:
    one, two = two_replicas
    request = RouteRequest(namespace=KEY.namespace, service=KEY.name, uid="alice")
    pod = (await two.route_request(request)).pod_index  # alice is in two's routes
    assert await one.route_request(request) == await two.route_request(request)
    target = (pod + 1) % 3
    announced: list[object] = []
    two.sticky.observer = lambda key, uid: announced.append((key, uid))
    await one.migrate_user(KEY, "alice", target)
    for _ in range(50):
        if (await routes(two)).get("alice") == target:
            break
        await asyncio.sleep(0.02)
    assert (await routes(two))["alice"] == target
    assert (KEY, "alice") in announced  # two's xDS re-points alice's scope


async def test_a_pod_change_on_one_replica_rebuilds_the_other(
    two_replicas: tuple[StatefulRouteManager, StatefulRouteManager],
) -> None:
    one, two = two_replicas
    announced: list[object] = []
    two.subscribe(announced.append)
    await one.drain_pod(KEY, 1)
    for _ in range(50):
        if announced:
            break
        await asyncio.sleep(0.02)
    state = await two.service_state(KEY)
    assert state is not None
    assert state.pods[1].state.value == "draining"
