"""Pods that register themselves with a lease, over a real Redis: indices assigned, renewals
that write only the lease, and a lapse that drains the pod, then fails it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controlplane.domain import FailoverType, Pod, PodState, RouteRequest, Service, ServiceKey
from controlplane.errors import NoLease
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store
from tests.support.resolver import StaticResolver

NS, SVC = "games", "lobby"
KEY = ServiceKey(NS, SVC)
TTL_S, DRAIN_S = 5.0, 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_manager(store: Store, clock: Clock) -> StatefulRouteManager:
    resolver = StaticResolver({"worker-a": ("10.2.0.1",)})
    return StatefulRouteManager(
        store, view_ttl_s=0.0, clock=clock, resolver=resolver, lease_drain_s=DRAIN_S
    )


@pytest.fixture
async def manager(store: Store, clock: Clock) -> AsyncIterator[StatefulRouteManager]:
    manager = make_manager(store, clock)
    await manager.register_service(Service(namespace=NS, name=SVC))
    yield manager
    await manager.close()


def at(host: str, port: int = 8080) -> Pod:
    return Pod(index=0, host=host, port=port)


async def register(manager: StatefulRouteManager, host: str, ttl_s: float = TTL_S) -> Pod:
    pod, _ = await manager.leases.register(KEY, at(host), ttl_s, assign_index=True)
    return pod


async def state(manager: StatefulRouteManager, index: int) -> tuple[PodState, str]:
    pod = {p.index: p for p in await manager.pods(KEY)}[index]
    return pod.state, pod.health.reason


async def users_on(manager: StatefulRouteManager, index: int) -> list[str]:
    found = []
    for n in range(300):
        result = await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid=f"u{n}"))
        if result.pod_index == index:
            found.append(f"u{n}")
    assert found
    return found


async def test_pods_without_an_index_get_the_lowest_free_one_and_keep_it_when_they_renew(
    manager: StatefulRouteManager, store: Store, clock: Clock
) -> None:
    await manager.upsert_pod(KEY, Pod(index=1, host="10.9.9.9", port=8080))
    assert [(await register(manager, f"10.2.0.{n}")).index for n in (1, 2, 3)] == [0, 2, 3]
    written = await store.redis.hget(store.keys(KEY).pods, "2")
    clock.now += 2.0
    pod, ends_at = await manager.leases.register(KEY, at("10.2.0.2"), TTL_S, assign_index=True)
    assert (pod.index, ends_at) == (2, clock.now + TTL_S)
    assert await store.redis.hget(store.keys(KEY).pods, "2") == written  # only the lease moved
    # Another port is another pod.
    other, _ = await manager.leases.register(KEY, at("10.2.0.2", 9090), TTL_S, assign_index=True)
    assert other.index == 4


async def test_pods_registering_at_once_never_share_an_index(
    manager: StatefulRouteManager,
) -> None:
    pods = await asyncio.gather(*(register(manager, f"10.3.0.{n}") for n in range(8)))
    assert sorted(p.index for p in pods) == list(range(8))
    assert len({p.host for p in await manager.pods(KEY)}) == 8


async def test_a_pod_registering_by_name_is_resolved(manager: StatefulRouteManager) -> None:
    pod, _ = await manager.leases.register(KEY, Pod(index=7, name="worker-a", port=8080), TTL_S)
    assert (pod.index, pod.host, pod.state) == (7, "10.2.0.1", PodState.HEALTHY)


async def test_a_lapsed_lease_drains_the_pod_then_fails_it_and_its_users_move(
    manager: StatefulRouteManager, clock: Clock
) -> None:
    for n in range(3):  # pods 0 and 2 hold long leases; pod 1 goes silent
        await register(manager, f"10.2.0.{n}", TTL_S if n == 1 else 3600.0)
    users = await users_on(manager, 1)
    clock.now += TTL_S + 1
    assert await manager.leases.check_all() == 1
    assert await state(manager, 1) == (PodState.DRAINING, "lease lapsed 1.0 s ago")
    bound = {(await manager.get_binding(KEY, uid)).pod for uid in users}
    assert bound == {1}  # a drained pod keeps its users: only the renewals may be lost
    assert await manager.leases.check_all() == 0  # nothing new until the drain time is over

    clock.now += DRAIN_S
    assert await manager.leases.check_all() == 1
    assert await state(manager, 1) == (PodState.DOWN, "lease lapsed 11.0 s ago")
    assert 1 not in {(await manager.get_binding(KEY, uid)).pod for uid in users}
    event = (await manager.get_failover_history(KEY, kind=FailoverType.POD_FAILURE))[0]
    assert (event.pod, event.affected_users) == (1, len(users))
    assert await manager.leases.check_all() == 0  # done with it: the lease is dropped


async def test_a_renewal_after_a_lapse_brings_the_pod_back(
    manager: StatefulRouteManager, clock: Clock
) -> None:
    await register(manager, "10.2.0.1")
    clock.now += TTL_S + 1
    await manager.leases.check_all()
    assert (await state(manager, 0))[0] is PodState.DRAINING
    await register(manager, "10.2.0.1")
    assert await state(manager, 0) == (PodState.HEALTHY, "lease renewed")

    clock.now += TTL_S + DRAIN_S + 1
    await manager.leases.check_all()
    await manager.leases.check_all()
    assert (await state(manager, 0))[0] is PodState.DOWN
    await register(manager, "10.2.0.1")
    assert await state(manager, 0) == (PodState.RECOVERING, "lease renewed")
    await register(manager, "10.2.0.1")  # healthy_threshold (2) renewals, as passed checks
    assert (await state(manager, 0))[0] is PodState.HEALTHY


async def test_leases_live_in_redis_so_any_replica_sees_them_lapse(
    manager: StatefulRouteManager, store: Store, clock: Clock
) -> None:
    await register(manager, "10.2.0.1")
    other = make_manager(store, clock)
    try:
        clock.now += TTL_S + 1
        assert await other.leases.check_all() == 1
        assert (await state(manager, 0))[0] is PodState.DRAINING
    finally:
        await other.close()


async def test_a_pod_leaving_ends_its_lease_now(manager: StatefulRouteManager) -> None:
    await register(manager, "10.2.0.1")
    pod = await manager.leases.release(KEY, 0)
    assert pod.state is PodState.DRAINING
    await manager.upsert_pod(KEY, Pod(index=5, host="10.9.9.9", port=8080))
    with pytest.raises(NoLease, match="pod 5 holds no lease"):
        await manager.leases.release(KEY, 5)


async def test_removing_a_pod_drops_its_lease(
    manager: StatefulRouteManager, store: Store, clock: Clock
) -> None:
    await register(manager, "10.2.0.1")
    await manager.remove_pod(KEY, 0)
    assert await store.leases.ends_at(store.keys(KEY), 0) is None
