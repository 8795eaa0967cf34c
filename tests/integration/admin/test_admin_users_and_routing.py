"""Users over HTTP: routing, bindings, migration, unbinding."""

from __future__ import annotations

from admin_support import BASE, NAMESPACE, SERVICE, Client, expect, given_service, route

from controlplane.manager import StatefulRouteManager


async def test_route_binds_a_new_user_and_keeps_it_on_that_pod(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    first = await route(api, "alice")
    again = await route(api, "alice")
    assert first["new_binding"] is True
    assert again["new_binding"] is False
    assert again["pod_index"] == first["pod_index"]
    assert first["address"] == f"10.0.0.{first['pod_index']}:8080"
    assert first["strategy"] == "bounded_hash"
    assert first["health_status"] == "healthy"


async def test_route_uses_the_strategy_the_request_asks_for(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    body = {"namespace": NAMESPACE, "service": SERVICE, "uid": "u", "strategy": "round_robin"}
    assert (await expect(await api.post("/api/v1/route", json=body), 200))["strategy"] == (
        "round_robin"
    )


async def test_route_to_an_unknown_service_is_404(api: Client) -> None:
    body = {"namespace": "nowhere", "service": "nothing", "uid": "alice"}
    await expect(await api.post("/api/v1/route", json=body), 404, "unknown_service")


async def test_route_when_no_pod_takes_new_users_is_503(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=1)
    await expect(await api.post(f"{BASE}/pods/0/drain"), 200)
    body = {"namespace": NAMESPACE, "service": SERVICE, "uid": "alice"}
    await expect(await api.post("/api/v1/route", json=body), 503, "no_healthy_pods")


async def test_route_bodies_of_the_wrong_shape_are_422(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    valid = {"namespace": NAMESPACE, "service": SERVICE, "uid": "alice"}
    for wrong in (
        {**valid, "uid": 42},
        {**valid, "priority": 1},  # no such field
        {**valid, "strategy": "random"},
        {**valid, "unknown": True},
        {"namespace": NAMESPACE, "uid": "alice"},
        {**valid, "service": "x" * 300},
        {**valid, "namespace": "a/b"},
    ):
        await expect(await api.post("/api/v1/route", json=wrong), 422, "validation_error")


async def test_get_user_returns_the_binding(api: Client, manager: StatefulRouteManager) -> None:
    await given_service(manager)
    placed = await route(api, "alice")
    binding = await expect(await api.get(f"{BASE}/users/alice"), 200)
    assert binding["uid"] == "alice"
    assert binding["pod"] == placed["pod_index"]
    assert binding["bound_at"] > 0


async def test_get_of_an_unbound_user_is_404_not_bound(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    body = await expect(await api.get(f"{BASE}/users/nobody"), 404, "not_bound")
    assert body["context"] == {"uid": "nobody"}


async def test_put_user_moves_it_to_the_given_pod(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    placed = await route(api, "alice")
    target = (placed["pod_index"] + 1) % 3
    moved = await expect(await api.put(f"{BASE}/users/alice", json={"pod": target}), 200)
    assert moved["pod"] == target
    assert (await route(api, "alice"))["pod_index"] == target
    history = await expect(await api.get(f"{BASE}/failovers", params={"limit": 1}), 200)
    assert history[0]["type"] == "USER_MIGRATED"


async def test_put_binds_an_unbound_user(api: Client, manager: StatefulRouteManager) -> None:
    await given_service(manager)
    assert (await expect(await api.put(f"{BASE}/users/bob", json={"pod": 1}), 200))["pod"] == 1


async def test_moving_a_user_to_a_pod_that_takes_no_users_is_409(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    await expect(await api.post(f"{BASE}/pods/2/drain"), 200)
    response = await api.put(f"{BASE}/users/alice", json={"pod": 2})
    await expect(response, 409, "pod_not_eligible")


async def test_moving_a_user_to_an_unknown_pod_is_404(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    await expect(await api.put(f"{BASE}/users/alice", json={"pod": 9}), 404, "unknown_pod")


async def test_a_migration_body_needs_a_whole_pod_index(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    for wrong in ({}, {"pod": -1}, {"pod": "1"}, {"pod": 1.5}, {"pod": True}):
        response = await api.put(f"{BASE}/users/alice", json=wrong)
        await expect(response, 422, "validation_error")


async def test_delete_user_forgets_the_binding_and_returns_it(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    placed = await route(api, "alice")
    removed = await expect(await api.delete(f"{BASE}/users/alice"), 200)
    assert (removed["uid"], removed["pod"]) == ("alice", placed["pod_index"])
    await expect(await api.get(f"{BASE}/users/alice"), 404, "not_bound")
    await expect(await api.delete(f"{BASE}/users/alice"), 404, "not_bound")


async def test_a_uid_holding_a_slash_is_addressed_percent_encoded(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    await expect(await api.put(f"{BASE}/users/team%2Falice", json={"pod": 1}), 200)
    binding = await expect(await api.get(f"{BASE}/users/team%2Falice"), 200)
    assert binding["uid"] == "team/alice"
