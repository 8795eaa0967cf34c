"""Services over HTTP: register, update, list, delete, failover history."""

from __future__ import annotations

from admin_support import BASE, NAMESPACE, SERVICE, Client, expect, given_service, route

from controlplane.manager import StatefulRouteManager


async def test_put_with_an_empty_body_registers_the_service_with_default_settings(
    api: Client,
) -> None:
    service = await expect(await api.put(BASE), 200)
    assert service["namespace"] == NAMESPACE
    assert service["name"] == SERVICE
    assert service["settings"]["strategy"] == "bounded_hash"


async def test_put_replaces_the_settings_of_a_known_service(api: Client) -> None:
    await expect(await api.put(BASE), 200)
    body = {"strategy": "round_robin", "hash_balance_factor": 2.0}
    service = await expect(await api.put(BASE, json=body), 200)
    assert service["settings"]["strategy"] == "round_robin"
    listed = await expect(await api.get("/api/v1/services"), 200)
    assert listed == [service]


async def test_an_epoch_header_must_be_a_header_name_of_its_own(api: Client) -> None:
    for bad in ("X-Epoch", "x epoch", ":path", "host", "x-uid", "x-" + "e" * 70):
        body = {"failover": {"epoch_header": bad}}
        await expect(await api.put(BASE, json=body), 422, "validation_error")
    body = {"failover": {"epoch_header": "x-stateful-route-epoch"}}
    service = await expect(await api.put(BASE, json=body), 200)
    assert service["settings"]["failover"]["epoch_header"] == "x-stateful-route-epoch"


async def test_services_lists_every_registered_service(api: Client) -> None:
    await expect(await api.put("/api/v1/services/a/one"), 200)
    await expect(await api.put("/api/v1/services/b/two"), 200)
    listed = await expect(await api.get("/api/v1/services"), 200)
    assert [(s["namespace"], s["name"]) for s in listed] == [("a", "one"), ("b", "two")]


async def test_settings_of_the_wrong_shape_are_422_naming_the_field(api: Client) -> None:
    body = await expect(await api.put(BASE, json={"strategy": "random"}), 422, "validation_error")
    assert body["detail"][0]["loc"] == ["strategy"]
    await expect(await api.put(BASE, json={"no_such_setting": 1}), 422, "validation_error")


async def test_delete_removes_the_service_and_its_pods(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    response = await api.delete(BASE)
    assert response.status == 204
    assert await expect(await api.get("/api/v1/services"), 200) == []
    await expect(await api.get(f"{BASE}/pods"), 404, "unknown_service")


async def test_delete_of_an_unknown_service_is_404(api: Client) -> None:
    await expect(await api.delete(BASE), 404, "unknown_service")


async def test_failovers_are_listed_newest_first_and_limited(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    await route(api, "alice")
    await expect(await api.post(f"{BASE}/pods/0/drain"), 200)
    await expect(await api.post(f"{BASE}/pods/0/recover"), 200)
    events = await expect(await api.get(f"{BASE}/failovers"), 200)
    assert [e["type"] for e in events] == ["POD_RECOVERY", "POD_DRAINED"]
    limited = await expect(await api.get(f"{BASE}/failovers", params={"limit": 1}), 200)
    assert limited == events[:1]


async def test_failovers_are_filtered_by_pod_and_type_before_the_limit(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    for action in ("drain", "recover"):
        for pod in (0, 1):
            await expect(await api.post(f"{BASE}/pods/{pod}/{action}"), 200)
    of_pod_0 = await expect(await api.get(f"{BASE}/failovers", params={"pod": 0}), 200)
    assert [(e["type"], e["pod"]) for e in of_pod_0] == [("POD_RECOVERY", 0), ("POD_DRAINED", 0)]
    drained = await expect(
        await api.get(f"{BASE}/failovers", params={"type": "POD_DRAINED", "limit": 1}), 200
    )
    assert [(e["type"], e["pod"]) for e in drained] == [("POD_DRAINED", 1)]
    both = {"type": "POD_DRAINED", "pod": 0}
    assert [
        e["pod"] for e in await expect(await api.get(f"{BASE}/failovers", params=both), 200)
    ] == [0]
    none = await expect(await api.get(f"{BASE}/failovers", params={"pod": 2}), 200)
    assert none == []


async def test_failovers_type_must_be_an_event_type(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    response = await api.get(f"{BASE}/failovers", params={"type": "pod_failure"})
    body = await expect(response, 400, "invalid_input")
    assert "POD_FAILURE" in body["detail"]


async def test_failovers_limit_must_be_a_positive_whole_number(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    for limit in ("0", "-1", "abc", "1.5", "100000"):
        response = await api.get(f"{BASE}/failovers", params={"limit": limit})
        await expect(response, 400, "invalid_input")


async def test_failovers_of_an_unknown_service_is_404(api: Client) -> None:
    await expect(await api.get(f"{BASE}/failovers"), 404, "unknown_service")
