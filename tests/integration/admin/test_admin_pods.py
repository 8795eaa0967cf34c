"""Pods over HTTP: register, list, remove, drain, fail, recover."""

from __future__ import annotations

import pytest
from admin_support import BASE, NAMESPACE, SERVICE, Client, expect, given_service, route

from controlplane.domain import ServiceKey
from controlplane.manager import StatefulRouteManager


async def test_pods_lists_state_weight_load_and_bound_users(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    placed = [await route(api, f"user-{n}") for n in range(6)]
    pods = await expect(await api.get(f"{BASE}/pods"), 200)
    assert [p["pod_index"] for p in pods] == [0, 1]
    assert pods[0]["address"] == "10.0.0.0:8080"
    assert {p["state"] for p in pods} == {"healthy"}
    assert {p["weight"] for p in pods} == {1}
    assert {"load_state", "active_requests", "response_time_ms"} <= pods[0].keys()
    assert [p["bound_users"] for p in pods] == [
        sum(1 for r in placed if r["pod_index"] == index) for index in (0, 1)
    ]


async def test_post_registers_a_pod_and_answers_with_its_status(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=0)
    pod = await expect(
        await api.post(f"{BASE}/pods", json={"index": 4, "host": "pod-4.lobby", "port": 9000}), 200
    )
    assert (pod["pod_index"], pod["address"], pod["state"]) == (4, "pod-4.lobby:9000", "healthy")
    pods = await expect(await api.get(f"{BASE}/pods"), 200)
    assert pods == [pod]


async def test_post_of_a_known_pod_changes_address_and_weight_but_keeps_its_health(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    await expect(await api.post(f"{BASE}/pods/1/drain"), 200)
    body = {"index": 1, "host": "10.0.9.9", "port": 8081, "weight": 5}
    pod = await expect(await api.post(f"{BASE}/pods", json=body), 200)
    assert (pod["address"], pod["weight"], pod["state"]) == ("10.0.9.9:8081", 5, "draining")


async def test_a_pod_body_may_not_set_health_or_load(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=0)
    body = {"index": 0, "host": "h", "port": 1, "health": {"state": "healthy"}}
    await expect(await api.post(f"{BASE}/pods", json=body), 422, "validation_error")


async def test_a_pod_index_beyond_the_largest_one_is_422(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=0)
    body = {"index": 2**31, "host": "h", "port": 1}
    await expect(await api.post(f"{BASE}/pods", json=body), 422, "validation_error")
    await expect(await api.put(f"{BASE}/users/alice", json={"pod": 10**30}), 422)


async def test_pods_of_an_unknown_service_are_404(api: Client) -> None:
    await expect(await api.get(f"{BASE}/pods"), 404, "unknown_service")
    body = {"index": 0, "host": "h", "port": 1}
    await expect(await api.post(f"{BASE}/pods", json=body), 404, "unknown_service")


async def test_removing_a_pod_moves_its_users_and_reports_the_failover(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    await expect(await api.put(f"{BASE}/users/alice", json={"pod": 0}), 200)
    removed = await expect(await api.delete(f"{BASE}/pods/0"), 200)
    assert removed["pod_index"] == 0
    assert removed["failover"]["affected_users"] == 1
    assert removed["failover"]["to_pods"] == {"1": 1}
    assert (await expect(await api.get(f"{BASE}/users/alice"), 200))["pod"] == 1
    assert [p["pod_index"] for p in await expect(await api.get(f"{BASE}/pods"), 200)] == [1]


async def test_removing_a_pod_without_users_reports_no_failover(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    assert await expect(await api.delete(f"{BASE}/pods/1"), 200) == {
        "pod_index": 1,
        "failover": None,
    }


async def test_drain_stops_new_users_but_keeps_the_bound_ones(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    await expect(await api.put(f"{BASE}/users/alice", json={"pod": 0}), 200)
    change = await expect(await api.post(f"{BASE}/pods/0/drain", json={"reason": "deploy"}), 200)
    assert change["pod"]["state"] == "draining"
    assert change["pod"]["reason"] == "deploy"
    assert change["failover"] is None
    assert (await route(api, "alice"))["pod_index"] == 0
    assert {(await route(api, f"new-{n}"))["pod_index"] for n in range(5)} == {1}


async def test_fail_moves_the_users_to_healthy_pods_and_records_it(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=3)
    for uid in ("alice", "bob"):
        await expect(await api.put(f"{BASE}/users/{uid}", json={"pod": 2}), 200)
    change = await expect(await api.post(f"{BASE}/pods/2/fail"), 200)
    assert change["pod"]["state"] == "down"
    assert change["pod"]["bound_users"] == 0
    assert change["failover"]["type"] == "POD_FAILURE"
    assert change["failover"]["affected_users"] == 2
    for uid in ("alice", "bob"):
        assert (await expect(await api.get(f"{BASE}/users/{uid}"), 200))["pod"] in (0, 1)
    history = await expect(await api.get(f"{BASE}/failovers", params={"limit": 1}), 200)
    assert history == [change["failover"]]


async def test_failing_the_only_pod_marks_it_down_and_leaves_its_users_bound(
    api: Client, manager: StatefulRouteManager
) -> None:
    # Nowhere to move them: they are placed afresh on their next request.
    await given_service(manager, pods=1)
    await route(api, "alice")
    change = await expect(await api.post(f"{BASE}/pods/0/fail"), 200)
    assert change["pod"]["state"] == "down"
    assert change["failover"]["affected_users"] == 0
    assert (await expect(await api.get(f"{BASE}/users/alice"), 200))["pod"] == 0


async def test_recover_with_rebalance_gives_the_pod_users_again(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    await expect(await api.post(f"{BASE}/pods/1/drain"), 200)
    for n in range(10):
        await route(api, f"user-{n}")
    change = await expect(await api.post(f"{BASE}/pods/1/recover", json={"rebalance": True}), 200)
    assert change["pod"]["state"] == "healthy"
    assert change["pod"]["bound_users"] > 0


async def test_recover_without_a_body_only_makes_the_pod_healthy(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    await expect(await api.post(f"{BASE}/pods/1/drain"), 200)
    await route(api, "alice")
    change = await expect(await api.post(f"{BASE}/pods/1/recover"), 200)
    assert (change["pod"]["state"], change["pod"]["bound_users"]) == ("healthy", 0)


async def test_actions_on_an_unknown_pod_are_404(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=1)
    for action in ("drain", "recover", "fail"):
        await expect(await api.post(f"{BASE}/pods/7/{action}"), 404, "unknown_pod")
    await expect(await api.delete(f"{BASE}/pods/7"), 404, "unknown_pod")


async def test_a_pod_index_that_is_not_a_whole_number_is_400(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=1)
    for index in ("-1", "abc", "1.0", "+1", "%EF%BC%91", str(2**31), "1" * 40):
        await expect(await api.post(f"{BASE}/pods/{index}/drain"), 400, "invalid_input")


async def test_a_pod_action_body_of_the_wrong_shape_is_422(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=1)
    response = await api.post(f"{BASE}/pods/0/recover", json={"rebalance": "maybe"})
    await expect(response, 422, "validation_error")
    await expect(await api.post(f"{BASE}/pods/0/drain", json={"reason": ""}), 422)


async def test_a_pod_reports_its_load_and_the_pod_list_shows_it(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    report = {"active_requests": 7, "active_connections": 3, "load_state": 40}
    pod = await expect(await api.post(f"{BASE}/pods/1/load", json=report), 200)
    assert (pod["active_requests"], pod["active_connections"], pod["load_state"]) == (7, 3, 40)
    pods = await expect(await api.get(f"{BASE}/pods"), 200)
    assert pods[1]["load_state"] == 40
    await expect(await api.post(f"{BASE}/pods/1/load", json={"load_state": 101}), 422)
    await expect(await api.post(f"{BASE}/pods/9/load", json={}), 404)


async def test_a_request_count_is_kept_when_a_later_report_does_not_count_requests(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    assert (await expect(await api.get(f"{BASE}/pods"), 200))[1]["requests_total"] is None
    await expect(await api.post(f"{BASE}/pods/1/load", json={"requests_total": 120}), 200)
    pod = await expect(await api.post(f"{BASE}/pods/1/load", json={"active_requests": 2}), 200)
    assert (pod["active_requests"], pod["requests_total"]) == (2, 120)
    await expect(await api.post(f"{BASE}/pods/1/load", json={"requests_total": -1}), 422)


async def test_drain_may_move_users_at_a_rate_and_refuses_a_rate_of_zero(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    await expect(await api.post(f"{BASE}/pods/0/drain", json={"move_users_per_s": 0}), 422)
    changed = await expect(
        await api.post(f"{BASE}/pods/0/drain", json={"move_users_per_s": 50}), 200
    )
    assert changed["pod"]["state"] == "draining"


async def pages_of_users(api: Client, pod: int, limit: int) -> list[list[str]]:
    """Every page of ``pod``'s users, following ``next_cursor``."""
    pages, cursor = [], 0
    while True:
        params = {"cursor": cursor, "limit": limit}
        page = await expect(await api.get(f"{BASE}/pods/{pod}/users", params=params), 200)
        pages.append(page["users"])
        if page["next_cursor"] is None:
            return pages
        cursor = page["next_cursor"]


async def test_a_pods_users_come_page_by_page_each_once(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=1)
    # More than Redis keeps in a compact set (128 entries), so SSCAN really pages.
    uids = {f"user-{n}" for n in range(600)}
    await manager.store.bindings.bind_many(
        manager.store.keys(ServiceKey.of(NAMESPACE, SERVICE)), [(u, 0) for u in uids], now=1.0
    )
    pages = await pages_of_users(api, 0, limit=100)
    assert len(pages) > 1
    assert all(len(page) >= 100 for page in pages[:-1])
    listed = [uid for page in pages for uid in page]
    assert sorted(listed) == sorted(uids)
    first = await expect(await api.get(f"{BASE}/pods/0/users"), 200)
    assert first["pod"] == 0
    assert first["bound_users"] == 600


async def test_a_pod_without_users_has_one_empty_page(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    alice = await route(api, "alice")
    other = 1 - alice["pod_index"]
    page = await expect(await api.get(f"{BASE}/pods/{other}/users"), 200)
    assert page == {"pod": other, "bound_users": 0, "users": [], "next_cursor": None}
    hers = await expect(await api.get(f"{BASE}/pods/{alice['pod_index']}/users"), 200)
    assert hers["users"] == ["alice"]


async def test_users_of_an_unknown_pod_is_404_and_bad_paging_400(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=1)
    await expect(await api.get(f"{BASE}/pods/7/users"), 404, "unknown_pod")
    for params in ({"limit": "0"}, {"limit": "100001"}, {"cursor": "-1"}, {"cursor": "x"}):
        await expect(await api.get(f"{BASE}/pods/0/users", params=params), 400, "invalid_input")


async def test_a_pod_registered_by_name_gets_the_address_its_name_resolves_to(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=0)
    body = {"index": 0, "name": "localhost", "port": 9000}
    pod = await expect(await api.post(f"{BASE}/pods", json=body), 200)
    assert (pod["pod_index"], pod["name"], pod["address"]) == (0, "localhost", "127.0.0.1:9000")
    assert pod["state"] == "healthy"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"name": "localhost", "port": 1}, "give the pod an index, or a name ending"),
        ({"index": 0, "name": "localhost", "host": "127.0.0.1", "port": 1}, "either a host"),
        ({"index": 0, "port": 1}, "either a host"),
        ({"name": "pod-0", "index": None, "port": 1}, "leave the field out rather than null"),
        ({"index": 0, "name": "two words", "port": 1}, "name must be a DNS name"),
    ],
)
async def test_a_pod_body_that_cannot_say_where_or_which_pod_is_422_saying_why(
    api: Client, manager: StatefulRouteManager, body: dict[str, object], problem: str
) -> None:
    await given_service(manager, pods=0)
    refused = await expect(await api.post(f"{BASE}/pods", json=body), 422, "validation_error")
    assert problem in str(refused["detail"]), refused
    assert await manager.pods(ServiceKey(NAMESPACE, SERVICE)) == []
