"""A drain with ``move_users_per_s`` moves users at that rate, on the leader only (real Redis)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from controlplane.domain import FailoverType, Pod, RouteRequest, Service, Strategy
from controlplane.domain.models import ServiceSettings
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store

from .conftest import KEY, NS, SVC


async def service_with_users(manager: StatefulRouteManager, on_pod_zero: int) -> None:
    """Three pods, round robin: ``on_pod_zero`` users on each."""
    settings = ServiceSettings(strategy=Strategy.ROUND_ROBIN)
    await manager.register_service(Service(namespace=NS, name=SVC, settings=settings))
    for index in range(3):
        await manager.upsert_pod(KEY, Pod(index=index, host="127.0.0.1", port=9000 + index))
    for i in range(3 * on_pod_zero):
        await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid=f"u{i}"))


async def seconds_until_empty(store: Store, pod: int, deadline_s: float) -> float:
    """Seconds until ``pod`` has no users left (polled on Redis's reverse index)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    keys = store.keys(KEY)
    while (await store.bindings.count_per_pod(keys, [pod]))[pod]:
        assert loop.time() - started < deadline_s, "the drain did not finish in time"
        await asyncio.sleep(0.01)
    return loop.time() - started


async def seconds_until_below(store: Store, pod: int, users: int, deadline_s: float) -> float:
    """Seconds until ``pod`` holds fewer than ``users`` (its first user moved)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    keys = store.keys(KEY)
    while (await store.bindings.count_per_pod(keys, [pod]))[pod] >= users:
        assert loop.time() - started < deadline_s, "the drain did not start in time"
        await asyncio.sleep(0.01)
    return loop.time() - started


async def drain_events(manager: StatefulRouteManager) -> list[tuple[str, int]]:
    return [
        (event.reason, event.affected_users)
        for event in await manager.get_failover_history(KEY)
        if event.type is FailoverType.USER_MIGRATED
    ]


@pytest.mark.parametrize(("per_second", "users"), [(1.0, 3), (4.0, 8)])
async def test_a_drain_moves_n_users_at_r_per_second_in_n_over_r_seconds(
    manager: StatefulRouteManager, store: Store, per_second: float, users: int
) -> None:
    await service_with_users(manager, users)
    await manager.drain_pod(KEY, 0, move_users_per_s=per_second)
    took = await seconds_until_empty(store, 0, deadline_s=3 * users / per_second)
    assert took == pytest.approx(users / per_second, rel=0.1)
    for _ in range(100):  # the mover records its event once it finds the pod empty
        if await drain_events(manager):
            break
        await asyncio.sleep(0.02)
    assert await drain_events(manager) == [("drain", users)]


async def test_a_drain_asked_of_a_follower_is_moved_by_the_leader_alone_at_the_rate(
    store: Store,
) -> None:
    leader = StatefulRouteManager(store)
    follower = StatefulRouteManager(store, is_leader=lambda: False)

    async def upkeep() -> None:  # the leader's reconcile, as Server runs it (faster here)
        while True:
            await leader.failover.reconcile()
            await asyncio.sleep(0.05)

    await service_with_users(follower, 8)
    task = asyncio.create_task(upkeep())
    try:
        await follower.drain_pod(KEY, 0, move_users_per_s=4)
        # The leader starts at a reconcile once it sees the drain; from its first move, the
        # other 7 users at 4/s take 1.75 s.
        await seconds_until_below(store, 0, 8, deadline_s=3)
        took = await seconds_until_empty(store, 0, deadline_s=6)
        assert took == pytest.approx(1.75, rel=0.1)
        for _ in range(100):
            if await drain_events(leader):
                break
            await asyncio.sleep(0.02)
        assert await drain_events(leader) == [("drain", 8)]  # one mover: the leader's
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await leader.close()
        await follower.close()
