"""route_request and friends against a real Redis."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from controlplane.domain import RouteRequest, Strategy
from controlplane.errors import NoHealthyPods, UnknownService
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store

from .conftest import KEY, NS, SVC, Clock, MakeService


def request(uid: str, strategy: Strategy | None = None) -> RouteRequest:
    return RouteRequest(namespace=NS, service=SVC, uid=uid, strategy=strategy)


async def test_a_bound_user_gets_the_same_pod_every_time(make_service: MakeService) -> None:
    manager = await make_service()
    first = await manager.route_request(request("alice"))
    again = [await manager.route_request(request("alice")) for _ in range(5)]
    assert first.new_binding
    assert {r.pod_index for r in again} == {first.pod_index}
    assert not any(r.new_binding for r in again)


async def test_concurrent_requests_of_one_new_user_from_two_replicas_bind_once(
    make_service: MakeService, store: Store
) -> None:
    one = await make_service(strategy=Strategy.ROUND_ROBIN)
    two = StatefulRouteManager(store)
    results = await asyncio.gather(
        *(m.route_request(request("newcomer")) for m in (one, two) for _ in range(250))
    )
    assert len({r.pod_index for r in results}) == 1
    assert sum(r.new_binding for r in results) == 1
    counts = await store.bindings.count_per_pod(store.keys(KEY), range(4))
    assert sum(counts.values()) == 1
    await two.close()


async def test_weighted_users_land_within_one_point_of_their_share(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 2, 3, 4), strategy=Strategy.WEIGHTED_ROUND_ROBIN)
    results = await asyncio.gather(
        *(manager.route_request(request(f"u{i}")) for i in range(10_000))
    )
    shares = Counter(r.pod_index for r in results)
    for pod, weight in enumerate((1, 2, 3, 4)):
        assert abs(shares[pod] / 10_000 - weight / 10) <= 0.01


async def test_round_robin_rotates_new_users_over_every_pod(make_service: MakeService) -> None:
    manager = await make_service(strategy=Strategy.ROUND_ROBIN)
    pods = [(await manager.route_request(request(f"u{i}"))).pod_index for i in range(8)]
    assert pods == [0, 1, 2, 3, 0, 1, 2, 3]


async def test_pod_zero_is_a_pod_like_any_other(make_service: MakeService) -> None:
    manager = await make_service(weights=(1,))
    result = await manager.route_request(request("zed"))
    assert result.pod_index == 0
    binding = await manager.get_binding(KEY, "zed")
    assert binding.pod == 0


async def test_user_left_on_a_failed_pod_is_placed_again_on_next_request(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 1))
    first = await manager.route_request(request("mover"))
    other = 1 - first.pod_index
    await manager.drain_pod(KEY, other)
    # With the only other pod draining, the failed pod's user has nowhere to go yet.
    await manager.handle_pod_failure(KEY, first.pod_index, reason="crashed")
    assert (await manager.get_binding(KEY, "mover")).pod == first.pod_index
    await manager.recover_pod(KEY, other)
    result = await manager.route_request(request("mover"))
    assert result.pod_index == other
    assert result.new_binding
    assert (await manager.get_binding(KEY, "mover")).pod == other


async def test_no_eligible_pod_is_a_typed_error(make_service: MakeService) -> None:
    manager = await make_service(weights=(1, 1))
    await manager.drain_pod(KEY, 0)
    await manager.drain_pod(KEY, 1)
    with pytest.raises(NoHealthyPods):
        await manager.route_request(request("late"))


async def test_unknown_service_is_a_typed_error(manager: StatefulRouteManager) -> None:
    with pytest.raises(UnknownService):
        await manager.route_request(request("alice"))


async def test_get_best_pod_binds_nobody(make_service: MakeService, store: Store) -> None:
    manager = await make_service()
    pod = await manager.get_best_pod(KEY, uid="alice")
    assert 0 <= pod < 4
    assert await store.bindings.count(store.keys(KEY)) == 0


async def test_idle_users_are_forgotten_after_the_service_ttl(
    make_service: MakeService, store: Store, clock: Clock
) -> None:
    manager = await make_service()
    clock.now = 1000.0
    await manager.route_request(request("idle"))
    await manager.route_request(request("busy"))
    clock.now += 7 * 24 * 3600 - 10
    await manager.route_request(request("busy"))  # seen again: stays
    clock.now += 20
    assert await manager.router.expire_idle() == 1
    keys = store.keys(KEY)
    assert {uid async for uid, _ in store.bindings.scan(keys)} == {"busy"}
