"""The users whose routes Envoy carries follow their bindings, and survive a restart."""

from __future__ import annotations

from controlplane.domain import RouteRequest, Strategy
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store

from .conftest import KEY, NS, SVC, Clock, MakeService


async def routed(manager: StatefulRouteManager, uid: str) -> int:
    result = await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid=uid))
    return result.pod_index


async def routes(manager: StatefulRouteManager) -> dict[str, int]:
    return dict(manager.sticky.routes(KEY))


async def test_placed_users_enter_the_routes_with_their_pods(make_service: MakeService) -> None:
    manager = await make_service()
    placed = {uid: await routed(manager, uid) for uid in ("alice", "bob", "carol")}
    assert await routes(manager) == placed


async def test_a_change_of_routes_is_announced_per_user_but_a_repeat_visit_is_not(
    make_service: MakeService,
) -> None:
    manager = await make_service()
    rebuilt: list[object] = []
    manager.subscribe(rebuilt.append)
    announced: list[object] = []
    manager.sticky.observer = lambda key, uid: announced.append((key, uid))
    await routed(manager, "alice")
    assert announced == [(KEY, "alice")]
    await routed(manager, "alice")
    assert announced == [(KEY, "alice")]
    assert rebuilt == []  # a user's scope changes alone: the service is not rebuilt


async def test_failover_and_migration_move_routes_and_unbind_removes_them(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 1, 1), strategy=Strategy.ROUND_ROBIN)
    for i in range(30):
        await routed(manager, f"u{i}")
    await manager.handle_pod_failure(KEY, 1)
    table = await routes(manager)
    assert len(table) == 30
    assert 1 not in table.values()
    target = 2 if table["u0"] == 0 else 0
    await manager.migrate_user(KEY, "u0", target)
    assert (await routes(manager))["u0"] == target
    await manager.unbind_user(KEY, "u0")
    assert "u0" not in await routes(manager)


async def test_users_unseen_for_the_window_leave_the_routes_but_keep_their_binding(
    make_service: MakeService, clock: Clock
) -> None:
    manager = await make_service()
    clock.now = 1000.0
    pod = await routed(manager, "alice")
    await routed(manager, "bob")
    clock.now += 300
    await routed(manager, "bob")
    clock.now += 301
    assert manager.router.expire_routes() == 1
    assert set(await routes(manager)) == {"bob"}
    assert (await manager.get_binding(KEY, "alice")).pod == pod
    assert await routed(manager, "alice") == pod
    assert set(await routes(manager)) == {"alice", "bob"}


async def test_a_restarted_manager_serves_the_same_routes(
    make_service: MakeService, store: Store
) -> None:
    manager = await make_service()
    for i in range(50):
        await routed(manager, f"u{i}")
    await manager.router.flush_last_seen()
    before = await routes(manager)
    restarted = StatefulRouteManager(store)
    assert await restarted.router.load_routes() == 50
    assert await routes(restarted) == before
    await restarted.close()
