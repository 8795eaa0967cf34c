"""A service binds new users only within its limits; bound users never notice them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from controlplane.domain import NewUserLimits, Pod, RouteRequest, Service, ServiceSettings
from controlplane.errors import NewUsersLimited
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store
from tests.integration.manager.conftest import KEY, NS, SVC, Clock

ROOMY_RATE = {"new_per_s": 1_000_000.0, "burst": 10_000_000}


def request(uid: str) -> RouteRequest:
    return RouteRequest(namespace=NS, service=SVC, uid=uid)


async def limited(manager: StatefulRouteManager, limits: NewUserLimits) -> StatefulRouteManager:
    settings = ServiceSettings(new_users=limits)
    await manager.register_service(Service(namespace=NS, name=SVC, settings=settings))
    for index in range(3):
        await manager.upsert_pod(KEY, Pod(index=index, host="127.0.0.1", port=9000 + index))
    return manager


@pytest.fixture
async def other_replica(store: Store, clock: Clock) -> AsyncIterator[StatefulRouteManager]:
    replica = StatefulRouteManager(store, clock=clock)
    yield replica
    await replica.close()


async def test_past_max_bound_users_new_users_are_refused_and_bound_ones_served(
    manager: StatefulRouteManager,
) -> None:
    await limited(manager, NewUserLimits(max_bound_users=5, **ROOMY_RATE))
    bound = {f"u{i}": (await manager.route_request(request(f"u{i}"))).pod_index for i in range(5)}
    with pytest.raises(NewUsersLimited) as refused:
        await manager.route_request(request("stranger"))
    assert refused.value.detail["reason"] == "max_bound_users"
    for uid, pod in bound.items():
        assert (await manager.route_request(request(uid))).pod_index == pod
    assert "stranger" not in manager.sticky.routes(KEY)
    assert await manager.store.bindings.count(manager.store.keys(KEY)) == 5


async def test_the_bound_holds_across_replicas(
    manager: StatefulRouteManager, other_replica: StatefulRouteManager
) -> None:
    await limited(manager, NewUserLimits(max_bound_users=4, **ROOMY_RATE))
    for i in range(4):
        replica = manager if i % 2 else other_replica
        await replica.route_request(request(f"u{i}"))
    for replica in (manager, other_replica):
        with pytest.raises(NewUsersLimited):
            await replica.route_request(request("stranger"))


async def test_idle_expiry_makes_room_for_new_users_again(
    manager: StatefulRouteManager, clock: Clock
) -> None:
    await limited(manager, NewUserLimits(max_bound_users=2, **ROOMY_RATE))
    clock.now = 1_000.0
    await manager.route_request(request("old-1"))
    await manager.route_request(request("old-2"))
    with pytest.raises(NewUsersLimited):
        await manager.route_request(request("new"))
    clock.now += ServiceSettings().binding_idle_ttl_s + 1
    assert await manager.router.expire_idle() == 2
    assert (await manager.route_request(request("new"))).new_binding


async def test_new_users_beyond_the_rate_wait_for_the_next_token(
    manager: StatefulRouteManager, clock: Clock
) -> None:
    await limited(manager, NewUserLimits(new_per_s=10.0, burst=3))
    clock.now = 1_000.0
    for i in range(3):
        await manager.route_request(request(f"u{i}"))
    with pytest.raises(NewUsersLimited) as refused:
        await manager.route_request(request("fourth"))
    assert refused.value.detail["reason"] == "new_per_s"
    assert (await manager.route_request(request("u0"))).pod_index in range(3)
    clock.now += 0.1  # one token
    assert (await manager.route_request(request("fourth"))).new_binding
    with pytest.raises(NewUsersLimited):
        await manager.route_request(request("fifth"))


async def test_refusals_are_logged_once_per_interval_not_per_request(
    manager: StatefulRouteManager, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    await limited(manager, NewUserLimits(max_bound_users=1, **ROOMY_RATE))
    clock.now = 1_000.0
    await manager.route_request(request("only"))
    caplog.set_level(logging.WARNING, logger="stateful_route.admission")
    for second in range(25):  # 25 s of 40 strangers a second
        clock.now = 1_000.0 + second
        for i in range(40):
            with pytest.raises(NewUsersLimited):
                await manager.route_request(request(f"s{second}-{i}"))
    lines = [r.getMessage() for r in caplog.records if "new_users_refused" in r.getMessage()]
    assert len(lines) == 3  # at 0 s, 10 s and 20 s
    assert "refused=1 " in lines[0]
    assert "refused=400 " in lines[1]
    assert "reason=max_bound_users" in lines[1]
