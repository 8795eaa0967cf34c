"""Pods given by DNS name, over a real Redis: resolved when registered, resolved again by the
watcher, moved to a new address under the same index, down while their name does not resolve.

Names are answered by a StaticResolver the test sets (no DNS is asked), except ``localhost``
through the system's resolver.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from controlplane.discovery.resolver import AddressFamily, SystemResolver
from controlplane.discovery.watcher import PodNameWatcher
from controlplane.domain import (
    FailoverType,
    HealthReport,
    Pod,
    PodState,
    RouteRequest,
    Service,
    ServiceKey,
)
from controlplane.errors import Conflict
from controlplane.manager import StatefulRouteManager
from controlplane.outage import RedisOutage
from controlplane.store import Store
from controlplane.xds.resources import build_load_assignment
from tests.support.resolver import StaticResolver

NS, SVC = "games", "lobby"
KEY = ServiceKey(NS, SVC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def resolver() -> StaticResolver:
    return StaticResolver({f"pod-{i}": (f"10.1.0.{10 + i}",) for i in range(3)})


@pytest.fixture
async def manager(store: Store, resolver: StaticResolver) -> AsyncIterator[StatefulRouteManager]:
    manager = StatefulRouteManager(store, view_ttl_s=0.0, resolver=resolver)
    await manager.register_service(Service(namespace=NS, name=SVC))
    for index in range(3):
        await manager.upsert_pod(KEY, Pod(index=index, name=f"pod-{index}", port=8080))
    yield manager
    await manager.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def watcher(
    manager: StatefulRouteManager, resolver: StaticResolver, clock: Clock
) -> AsyncIterator[PodNameWatcher]:
    outage = RedisOutage(manager.store.redis.ping)
    yield PodNameWatcher(
        manager, resolver, every_s=100.0, failed_every_s=1.0, outage=outage, clock=clock
    )
    await outage.close()


async def pod(manager: StatefulRouteManager, index: int) -> Pod:
    return {p.index: p for p in await manager.pods(KEY)}[index]


async def users_on(manager: StatefulRouteManager, index: int, count: int) -> list[str]:
    """Route users until ``count`` of them are bound to pod ``index``; their uids."""
    found: list[str] = []
    for n in range(1000):
        uid = f"user-{n}"
        result = await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid=uid))
        if result.pod_index == index:
            found.append(uid)
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} users placed on pod {index}")


async def bound_pods(manager: StatefulRouteManager, uids: list[str]) -> set[int]:
    return {(await manager.get_binding(KEY, uid)).pod for uid in uids}


async def test_a_pod_given_by_name_is_registered_at_the_address_its_name_resolves_to(
    manager: StatefulRouteManager,
) -> None:
    status = (await manager.get_service_load_status(KEY))[1]
    assert (status.name, status.address, status.state) == ("pod-1", "10.1.0.11:8080", "healthy")
    state = await manager.service_state(KEY)
    assert state is not None
    assignment = build_load_assignment(KEY, state.pods, {i: 1 for i in range(3)})
    (locality,) = assignment.endpoints
    addresses = [e.endpoint.address.socket_address.address for e in locality.lb_endpoints]
    assert addresses == ["10.1.0.10", "10.1.0.11", "10.1.0.12"]  # Envoy gets addresses


async def test_the_systems_resolver_answers_localhost_off_the_event_loop() -> None:
    answer = await SystemResolver(AddressFamily.IPV4).resolve("localhost")
    assert answer.addresses == ("127.0.0.1",)
    assert answer.outcome == "resolved"


async def test_a_pod_back_at_a_new_address_keeps_its_index_and_its_users(
    manager: StatefulRouteManager, resolver: StaticResolver, watcher: PodNameWatcher
) -> None:
    await watcher.round()
    users = await users_on(manager, 1, 5)
    # Rescheduled: pod-1 now has pod-2's old address, and pod-2 a new one.
    resolver.names.update({"pod-1": ("10.1.0.12",), "pod-2": ("10.1.0.99",)})
    watcher.pod_failed(KEY, 1)
    watcher.pod_failed(KEY, 2)
    assert await watcher.round() == 2
    assert ((await pod(manager, 1)).host, (await pod(manager, 2)).host) == (
        "10.1.0.12",
        "10.1.0.99",
    )
    # The binding is to the index, never to the address: the users stay with pod 1.
    assert await bound_pods(manager, users) == {1}
    result = await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid=users[0]))
    assert (result.pod_index, result.address) == (1, "10.1.0.12:8080")
    assert (await pod(manager, 1)).state is PodState.HEALTHY
    assert await manager.get_failover_history(KEY) == []  # a move is no failover


async def test_a_name_that_stops_resolving_is_a_pod_down_with_the_reason_until_it_is_back(
    manager: StatefulRouteManager,
    resolver: StaticResolver,
    watcher: PodNameWatcher,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "stateful_route.discovery")
    await watcher.round()
    users = await users_on(manager, 1, 5)
    del resolver.names["pod-1"]
    for step_s in (100.0, 1.0, 1.0):  # a serving pod's next round, then a failed pod's
        clock.now += step_s
        await watcher.round()
    down = await pod(manager, 1)
    reason = "name pod-1 does not resolve: Name or service not known"
    assert (down.state, down.host, down.health.reason) == (PodState.DOWN, None, reason)
    assert 1 not in await bound_pods(manager, users)  # its users moved
    (event,) = await manager.get_failover_history(KEY)
    assert (event.type, event.pod, event.reason) == (FailoverType.POD_FAILURE, 1, reason)
    assert resolver.asked.count("pod-1") == 5  # on registration, then each round
    unresolved = [r for r in caplog.records if "pod_name_unresolved" in r.getMessage()]
    assert len(unresolved) == 1  # once per change, not once per round
    assert (await manager.get_service_load_status(KEY))[1].address is None

    # Back under its name at a new address: it serves again once its checks pass.
    resolver.names["pod-1"] = ("10.1.0.21",)
    clock.now += 1.0
    await watcher.round()
    assert (await pod(manager, 1)).host == "10.1.0.21"
    for _ in range(2):
        await manager.update_pod_health(KEY, 1, HealthReport(is_healthy=True))
    back = await pod(manager, 1)
    assert (back.state, back.index) == (PodState.HEALTHY, 1)
    kinds = [e.type for e in await manager.get_failover_history(KEY, pod=1)]
    assert kinds == [FailoverType.POD_RECOVERY, FailoverType.POD_FAILURE]  # history kept


async def test_a_pod_whose_name_does_not_resolve_yet_is_registered_down_and_left_out_of_eds(
    manager: StatefulRouteManager, resolver: StaticResolver, watcher: PodNameWatcher
) -> None:
    registered = await manager.upsert_pod(KEY, Pod(index=3, name="pod-3", port=8080))
    assert (registered.state, registered.host) == (PodState.DOWN, None)
    assert registered.health.reason == "name pod-3 does not resolve: Name or service not known"
    state = await manager.service_state(KEY)
    assert state is not None
    (locality,) = build_load_assignment(KEY, state.pods, {i: 1 for i in range(4)}).endpoints
    assert [e.endpoint.hostname for e in locality.lb_endpoints] == ["pod-0", "pod-1", "pod-2"]
    assert 3 not in {
        (
            await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid=f"u{n}"))
        ).pod_index
        for n in range(50)
    }
    resolver.names["pod-3"] = ("10.1.0.13",)
    await watcher.round()
    assert (await pod(manager, 3)).host == "10.1.0.13"


async def test_a_resolver_that_does_not_answer_leaves_every_pod_where_it_is(
    manager: StatefulRouteManager, resolver: StaticResolver, watcher: PodNameWatcher
) -> None:
    resolver.silent = {"pod-0", "pod-1", "pod-2"}
    await watcher.round()
    pods = await manager.pods(KEY)
    assert [(p.host, p.state) for p in sorted(pods, key=lambda p: p.index)] == [
        (f"10.1.0.{10 + i}", PodState.HEALTHY) for i in range(3)
    ]


async def test_failed_pods_are_asked_for_sooner_and_a_reported_failure_at_once(
    manager: StatefulRouteManager,
    resolver: StaticResolver,
    watcher: PodNameWatcher,
    clock: Clock,
) -> None:
    assert await watcher.round() == 3  # every name, the first time
    await manager.handle_pod_failure(KEY, 2, "test")
    clock.now += 1.0
    assert await watcher.round() == 1  # the failed pod only; the others wait 100 s
    assert resolver.asked[-1] == "pod-2"
    watcher.pod_failed(KEY, 0)
    assert await watcher.round() == 1
    assert resolver.asked[-1] == "pod-0"
    clock.now += 100.0
    assert await watcher.round() == 3


async def test_a_known_pod_registered_again_under_a_name_that_does_not_resolve_fails(
    manager: StatefulRouteManager,
) -> None:
    failed = await manager.upsert_pod(KEY, Pod(index=0, name="gone-0", port=8080))
    assert failed.host is None
    now = await pod(manager, 0)
    assert (now.state, now.health.reason) == (
        PodState.DOWN,
        "name gone-0 does not resolve: Name or service not known",
    )


async def test_a_pod_without_an_address_cannot_be_recovered_by_hand(
    manager: StatefulRouteManager, resolver: StaticResolver, watcher: PodNameWatcher
) -> None:
    del resolver.names["pod-0"]
    await watcher.round()
    with pytest.raises(Conflict, match="pod 0 has no address: its name pod-0 does not resolve"):
        await manager.recover_pod(KEY, 0)


async def test_the_watcher_stops_when_cancelled_as_a_failure_report_wakes_it(
    manager: StatefulRouteManager, watcher: PodNameWatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager, "is_leader", lambda: False)  # a follower only waits
    running = asyncio.create_task(watcher.run())
    for _ in range(3):  # into the wait for the next round
        await asyncio.sleep(0)
    watcher.pod_failed(KEY, 0)
    running.cancel()  # in the same loop round as the wake: 3.11's wait_for lost this cancel
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, timeout=2)
