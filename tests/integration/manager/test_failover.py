"""Failure, migration, drain and recovery against a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.domain import (
    FailoverType,
    HealthReport,
    Pod,
    PodState,
    RouteRequest,
    Service,
    Strategy,
)
from controlplane.errors import InvalidInput, PodNotEligible, UnknownPod
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store

from .conftest import KEY, NS, SVC, MakeService


async def bind_users(manager: StatefulRouteManager, count: int, prefix: str = "u") -> None:
    await asyncio.gather(
        *(
            manager.route_request(RouteRequest(namespace=NS, service=SVC, uid=f"{prefix}{i}"))
            for i in range(count)
        )
    )


async def forward_and_reverse(store: Store, pods: range) -> tuple[dict[str, int], dict[str, int]]:
    keys = store.keys(KEY)
    forward = {uid: pod async for uid, pod in store.bindings.scan(keys)}
    reverse: dict[str, int] = {}
    for pod in pods:
        async for uid in store.bindings.users_of(keys, pod):
            reverse[uid] = pod
    return forward, reverse


async def test_users_of_a_failed_pod_move_to_healthy_pods_spread_out(
    make_service: MakeService, store: Store
) -> None:
    manager = await make_service(weights=(1, 1, 1, 1), strategy=Strategy.ROUND_ROBIN)
    await bind_users(manager, 4000)
    status = await manager.get_service_load_status(KEY)
    on_failed = status[2].bound_users
    assert on_failed == 1000

    event = await manager.handle_pod_failure(KEY, 2, reason="crashed")

    forward, reverse = await forward_and_reverse(store, range(4))
    assert forward == reverse
    assert len(forward) == 4000
    assert 2 not in forward.values()
    assert event is not None
    assert event.type is FailoverType.POD_FAILURE
    assert event.affected_users == 1000
    assert len(event.sample) == 10
    assert all(forward[uid] != 2 for uid in event.sample)
    assert sum(event.to_pods.values()) == 1000
    # Spread by weight, each within the bounded-load factor of its fair share.
    assert set(event.to_pods) == {0, 1, 3}
    assert all(count <= 1.25 * 1000 for count in event.to_pods.values())
    history = await manager.get_failover_history(KEY)
    assert history[0] == event


async def test_failed_checks_fail_the_pod_after_the_threshold_and_move_users(
    make_service: MakeService, store: Store
) -> None:
    manager = await make_service(weights=(1, 1))
    await bind_users(manager, 50)
    down = HealthReport(is_healthy=False, reason="connect refused")
    states = [(await manager.update_pod_health(KEY, 0, down)).health.state for _ in range(3)]
    assert states == [PodState.SUSPECT, PodState.SUSPECT, PodState.DOWN]
    forward, _ = await forward_and_reverse(store, range(2))
    assert set(forward.values()) == {1}
    events = await manager.get_failover_history(KEY)
    assert [e.type for e in events] == [FailoverType.POD_FAILURE]


async def test_a_failed_pod_recovers_after_healthy_threshold_passes(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 1))
    await manager.handle_pod_failure(KEY, 0)
    up = HealthReport(is_healthy=True, response_time_ms=3.0)
    first = await manager.update_pod_health(KEY, 0, up)
    second = await manager.update_pod_health(KEY, 0, up)
    assert (first.health.state, second.health.state) == (PodState.RECOVERING, PodState.HEALTHY)
    events = await manager.get_failover_history(KEY)
    assert [e.type for e in events] == [FailoverType.POD_RECOVERY, FailoverType.POD_FAILURE]


async def test_failure_of_an_already_failed_pod_moves_nobody_twice(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 1, 1))
    await bind_users(manager, 300)
    first = await manager.handle_pod_failure(KEY, 1)
    second = await manager.handle_pod_failure(KEY, 1)
    assert first is not None
    assert first.affected_users > 0
    assert second is None
    history = await manager.get_failover_history(KEY)
    assert [e.type for e in history] == [FailoverType.POD_FAILURE]


async def test_a_reconcile_during_a_failover_leaves_every_user_to_its_one_event(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 1, 1))
    await bind_users(manager, 3000)
    on_failed = (await manager.get_service_load_status(KEY))[1].bound_users

    changes: asyncio.Queue[object] = asyncio.Queue()
    manager.subscribe(changes.put_nowait)

    async def reconcile_once_failed() -> int:  # once the pod is marked, before it is emptied
        while (await manager.get_service_load_status(KEY))[1].state is not PodState.DOWN:
            await changes.get()
        return await manager.failover.reconcile()

    event, reconciled = await asyncio.gather(
        manager.handle_pod_failure(KEY, 1), reconcile_once_failed()
    )
    assert event is not None
    assert event.affected_users == on_failed
    assert reconciled == 0
    history = await manager.get_failover_history(KEY)
    assert [(e.type, e.affected_users) for e in history] == [(FailoverType.POD_FAILURE, on_failed)]


async def test_migrate_moves_one_user_and_records_it(make_service: MakeService) -> None:
    manager = await make_service()
    result = await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid="alice"))
    target = (result.pod_index + 1) % 4
    binding = await manager.migrate_user(KEY, "alice", target)
    assert binding.pod == target
    again = await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid="alice"))
    assert again.pod_index == target
    [event] = await manager.get_failover_history(KEY)
    assert (event.type, event.pod, event.sample, event.to_pods) == (
        FailoverType.USER_MIGRATED,
        result.pod_index,
        ["alice"],
        {target: 1},
    )


async def test_migrate_refuses_an_unknown_or_ineligible_target(make_service: MakeService) -> None:
    manager = await make_service(weights=(1, 1))
    await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid="alice"))
    await manager.drain_pod(KEY, 1)
    with pytest.raises(UnknownPod):
        await manager.migrate_user(KEY, "alice", 9)
    with pytest.raises(PodNotEligible):
        await manager.migrate_user(KEY, "alice", 1)


async def test_drained_pod_keeps_its_users_but_takes_no_new_ones(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 1), strategy=Strategy.ROUND_ROBIN)
    await bind_users(manager, 10)
    await manager.drain_pod(KEY, 0)
    status = await manager.get_service_load_status(KEY)
    assert status[0].state is PodState.DRAINING
    assert status[0].bound_users == 5
    await bind_users(manager, 10, prefix="late")
    status = await manager.get_service_load_status(KEY)
    assert status[0].bound_users == 5
    assert status[1].bound_users == 15
    [event] = await manager.get_failover_history(KEY)
    assert (event.type, event.affected_users) == (FailoverType.POD_DRAINED, 5)


async def test_a_recovered_pod_takes_new_users_once_envoy_can_have_heard_of_it(
    store: Store,
) -> None:
    now = [1000.0]
    manager = StatefulRouteManager(store, clock=lambda: now[0])
    await manager.register_service(Service(namespace=NS, name=SVC))
    for index in range(3):
        await manager.upsert_pod(KEY, Pod(index=index, host="127.0.0.1", port=9000 + index))
    await manager.handle_pod_failure(KEY, 0)
    await manager.recover_pod(KEY, 0)
    await bind_users(manager, 30, prefix="early")
    assert (await manager.get_service_load_status(KEY))[0].bound_users == 0
    now[0] += 2  # the push that tells Envoy the pod serves again has gone out
    await bind_users(manager, 30, prefix="later")
    assert (await manager.get_service_load_status(KEY))[0].bound_users > 0
    await manager.close()


async def test_a_recovered_pod_takes_new_users_at_once_when_no_other_pod_can(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 1))
    await manager.handle_pod_failure(KEY, 0)
    await manager.recover_pod(KEY, 0)
    await manager.drain_pod(KEY, 1)
    await bind_users(manager, 10)
    assert (await manager.get_service_load_status(KEY))[0].bound_users == 10


async def test_recover_moves_nobody_back_unless_asked_to_rebalance(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 1))
    await bind_users(manager, 100)
    await manager.handle_pod_failure(KEY, 0)
    await manager.recover_pod(KEY, 0)
    assert (await manager.get_service_load_status(KEY))[0].bound_users == 0
    await manager.handle_pod_failure(KEY, 0)
    await manager.recover_pod(KEY, 0, rebalance=True)
    status = await manager.get_service_load_status(KEY)
    assert status[0].bound_users == 50
    assert status[1].bound_users == 50


async def test_removing_a_pod_moves_its_users_first(
    make_service: MakeService, store: Store
) -> None:
    manager = await make_service(weights=(1, 1, 1))
    await bind_users(manager, 90)
    await manager.remove_pod(KEY, 1)
    forward, reverse = await forward_and_reverse(store, range(3))
    assert forward == reverse
    assert len(forward) == 90
    assert 1 not in forward.values()
    assert sorted(await manager.get_service_load_status(KEY)) == [0, 2]


async def test_a_pod_drained_at_a_rate_is_emptied_gradually(make_service: MakeService) -> None:
    manager = await make_service(weights=(1, 1, 1), strategy=Strategy.ROUND_ROBIN)
    await bind_users(manager, 30)
    started = asyncio.get_running_loop().time()
    await manager.drain_pod(KEY, 0, move_users_per_s=40)
    counts = []
    for _ in range(50):
        counts.append((await manager.get_service_load_status(KEY))[0].bound_users)
        if counts[-1] == 0:
            break
        await asyncio.sleep(0.05)
    took = asyncio.get_running_loop().time() - started
    assert counts[-1] == 0
    assert counts[0] > 0  # not all at once
    assert took >= 0.15  # 10 users at 40/s take about a quarter of a second
    status = await manager.get_service_load_status(KEY)
    assert status[0].state is PodState.DRAINING
    assert status[1].bound_users + status[2].bound_users == 30
    for _ in range(50):  # the mover records its one event once it finds the pod empty
        history = await manager.get_failover_history(KEY)
        if history[0].type is FailoverType.USER_MIGRATED:
            break
        await asyncio.sleep(0.02)
    [event, drained] = history[:2]
    assert (event.type, event.reason, event.affected_users) == (
        FailoverType.USER_MIGRATED,
        "drain",
        10,
    )
    assert drained.type is FailoverType.POD_DRAINED


async def test_a_drain_rate_must_be_positive(make_service: MakeService) -> None:
    manager = await make_service()
    with pytest.raises(InvalidInput):
        await manager.drain_pod(KEY, 0, move_users_per_s=0)
