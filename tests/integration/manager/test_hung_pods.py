"""A hung pod (checks time out) against a real Redis: its grace, its fence, then the move."""

from __future__ import annotations

import asyncio

from controlplane.domain import (
    HealthReport,
    Pod,
    PodState,
    RouteRequest,
    Service,
    ServiceSettings,
    Strategy,
)
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store

from .conftest import KEY, NS, SVC, Clock

GRACE_S, ROUTE_TIMEOUT_S = 5.0, 2.0
FENCE_ENDS = GRACE_S + ROUTE_TIMEOUT_S + 1.0  # the margin for the failure to reach Envoy
TIMED_OUT = HealthReport(is_healthy=False, timed_out=True, reason="health check timed out")


async def hang_service(manager: StatefulRouteManager) -> list[str]:
    """games/lobby on three pods, 30 users; the uids bound to pod 0."""
    settings = ServiceSettings.model_validate(
        {
            "strategy": Strategy.ROUND_ROBIN,
            "failover": {"hang_grace_s": GRACE_S},
            "envoy": {"route_timeout_s": ROUTE_TIMEOUT_S},
        }
    )
    await manager.register_service(Service(namespace=NS, name=SVC, settings=settings))
    for index in range(3):
        await manager.upsert_pod(KEY, Pod(index=index, host="127.0.0.1", port=9000 + index))
    uids = [f"u{i}" for i in range(30)]
    pods = await asyncio.gather(*(place(manager, uid) for uid in uids))
    return [uid for uid, pod in zip(uids, pods, strict=True) if pod == 0]


async def place(manager: StatefulRouteManager, uid: str) -> int:
    result = await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid=uid))
    return result.pod_index


async def pods_of(store: Store, uids: list[str]) -> set[int | None]:
    return set(await store.bindings.lookup_many(store.keys(KEY), uids))


async def state_of(manager: StatefulRouteManager, index: int) -> PodState:
    return (await manager.get_service_load_status(KEY))[index].state


async def test_a_pod_whose_checks_time_out_keeps_its_users_through_the_grace(
    manager: StatefulRouteManager, store: Store, clock: Clock
) -> None:
    victims = await hang_service(manager)
    for at in (0.0, 1.0, 2.0, 4.9):
        clock.now = at
        await manager.update_pod_health(KEY, 0, TIMED_OUT)
    assert await state_of(manager, 0) is PodState.SUSPECT
    assert await pods_of(store, victims) == {0}


async def test_a_hung_pod_fails_after_the_grace_and_its_users_move_only_when_its_fence_ends(
    manager: StatefulRouteManager, store: Store, clock: Clock
) -> None:
    victims = await hang_service(manager)
    for at in (0.0, 1.0, 2.0, GRACE_S):
        clock.now = at
        await manager.update_pod_health(KEY, 0, TIMED_OUT)
    assert await state_of(manager, 0) is PodState.DOWN

    # Fenced: requests sent to it may still be answered; nobody moves, not even through the
    # miss path, and a reconcile leaves them too.
    clock.now = FENCE_ENDS - 0.1
    assert await manager.failover.reconcile() == 0
    assert {await place(manager, uid) for uid in victims} == {0}
    assert await pods_of(store, victims) == {0}

    clock.now = FENCE_ENDS + 0.1
    assert await manager.failover.reconcile() == len(victims)
    assert 0 not in await pods_of(store, victims)


async def test_a_pod_that_refuses_connections_fails_over_at_once_whatever_the_grace(
    manager: StatefulRouteManager, store: Store, clock: Clock
) -> None:
    victims = await hang_service(manager)
    refused = HealthReport(is_healthy=False, reason="health check failed: ClientConnectorError")
    for at in (0.0, 1.0, 2.0):
        clock.now = at
        await manager.update_pod_health(KEY, 0, refused)
    assert await state_of(manager, 0) is PodState.DOWN
    assert 0 not in await pods_of(store, victims)
