"""Pod epochs: every move of users raises the epoch of the pods they move to (Redis decides)."""

from __future__ import annotations

from controlplane.domain import (
    Pod,
    PodHealth,
    PodState,
    RouteRequest,
    Service,
    ServiceSettings,
    Strategy,
)
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store

from .conftest import KEY, NS, SVC
from .test_failover import bind_users


async def register(manager: StatefulRouteManager, pods: int, epoch_header: str | None) -> None:
    settings = ServiceSettings.model_validate(
        {"strategy": Strategy.ROUND_ROBIN, "failover": {"epoch_header": epoch_header}}
    )
    await manager.register_service(Service(namespace=NS, name=SVC, settings=settings))
    for index in range(pods):
        await manager.upsert_pod(KEY, Pod(index=index, host="127.0.0.1", port=9000 + index))


async def epochs(store: Store) -> dict[int, int]:
    return {i: pod.epoch for i, pod in (await store.registry.pods(store.keys(KEY))).items()}


async def test_a_migrated_users_new_pod_gets_an_epoch_above_its_old_ones(
    manager: StatefulRouteManager, store: Store
) -> None:
    await register(manager, 3, "x-stateful-route-epoch")
    assert await epochs(store) == {0: 0, 1: 0, 2: 0}
    first = await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid="alice"))
    source = first.pod_index
    target, back = (source + 1) % 3, source
    await manager.migrate_user(KEY, "alice", target)
    after_one = await epochs(store)
    assert after_one[target] > after_one[source]
    await manager.migrate_user(KEY, "alice", back)
    after_two = await epochs(store)
    assert after_two[back] > after_two[target] > after_one[source]
    shown = await manager.get_service_load_status(KEY)
    assert {i: status.epoch for i, status in shown.items()} == after_two


async def test_a_failover_raises_the_epoch_of_every_pod_that_took_users(
    manager: StatefulRouteManager, store: Store
) -> None:
    await register(manager, 3, "x-stateful-route-epoch")
    await bind_users(manager, 30)
    before = await epochs(store)
    event = await manager.handle_pod_failure(KEY, 2, reason="crashed")
    assert event is not None
    assert set(event.to_pods) == {0, 1}
    after = await epochs(store)
    assert min(after[0], after[1]) > max(before.values())
    assert after[2] == before[2]  # the failed pod took nobody


async def test_a_pod_keeps_its_epoch_when_it_registers_again(
    manager: StatefulRouteManager, store: Store
) -> None:
    await register(manager, 2, "x-stateful-route-epoch")
    await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid="alice"))
    await manager.migrate_user(KEY, "alice", 1)
    raised = (await epochs(store))[1]
    await manager.upsert_pod(KEY, Pod(index=1, host="127.0.0.1", port=9001, weight=2))
    assert (await epochs(store))[1] == raised > 0


async def test_without_an_epoch_header_moves_leave_epochs_alone(
    manager: StatefulRouteManager, store: Store
) -> None:
    await register(manager, 2, None)
    await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid="alice"))
    await manager.migrate_user(KEY, "alice", 1)
    await manager.handle_pod_failure(KEY, 1, reason="crashed")
    assert await epochs(store) == {0: 0, 1: 0}


async def test_a_rebalance_raises_the_epoch_of_the_pod_it_fills(
    manager: StatefulRouteManager, store: Store
) -> None:
    await register(manager, 2, "x-stateful-route-epoch")
    await bind_users(manager, 20)
    await manager.handle_pod_failure(KEY, 0, reason="crashed")
    moved_to_one = (await epochs(store))[1]
    await manager.recover_pod(KEY, 0, rebalance=True)
    assert (await epochs(store))[0] > moved_to_one


async def test_a_user_placed_again_off_a_failed_pod_raises_its_new_pods_epoch(
    manager: StatefulRouteManager, store: Store
) -> None:
    await register(manager, 2, "x-stateful-route-epoch")
    await manager.migrate_user(KEY, "alice", 0)
    on_zero = (await epochs(store))[0]

    def fail(pod: Pod) -> tuple[Pod, None]:  # failed, its users not moved yet (no leader)
        return pod.model_copy(update={"health": PodHealth(state=PodState.DOWN)}), None

    await store.registry.update_pod(store.keys(KEY), 0, fail)
    other = StatefulRouteManager(store)  # a replica that reads the failure afresh
    try:
        placed = await other.route_request(RouteRequest(namespace=NS, service=SVC, uid="alice"))
    finally:
        await other.close()
    assert placed.pod_index == 1
    assert (await epochs(store))[1] > on_zero
