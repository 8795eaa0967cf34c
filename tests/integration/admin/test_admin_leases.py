"""Pods registering themselves over HTTP: POST .../leases and DELETE .../pods/{i}/lease."""

from __future__ import annotations

import pytest
from admin_support import BASE, NAMESPACE, SERVICE, Client, expect, given_service
from aiohttp import ClientSession

from controlplane.domain import ServiceKey
from controlplane.manager import StatefulRouteManager


async def test_a_pod_registers_itself_and_renews_under_the_index_it_was_given(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    body = {"host": "10.5.0.1", "port": 8080, "ttl_s": 15}
    lease = await expect(await api.post(f"{BASE}/leases", json=body), 200)
    assert (lease["pod_index"], lease["ttl_s"]) == (2, 15.0)  # the lowest free index
    assert (lease["pod"]["address"], lease["pod"]["state"]) == ("10.5.0.1:8080", "healthy")
    renewed = await expect(await api.post(f"{BASE}/leases", json={**body, "index": 2}), 200)
    assert renewed["pod_index"] == 2
    assert renewed["expires_at"] >= lease["expires_at"]


async def test_a_leaving_pod_is_drained_and_a_pod_without_a_lease_is_404(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=1)
    await expect(await api.post(f"{BASE}/leases", json={"host": "10.5.0.1", "port": 80}), 200)
    pod = await expect(await api.delete(f"{BASE}/pods/1/lease"), 200)
    assert (pod["pod_index"], pod["state"]) == (1, "draining")
    await expect(await api.delete(f"{BASE}/pods/0/lease"), 404, "no_lease")
    await expect(await api.delete(f"{BASE}/pods/9/lease"), 404, "unknown_pod")


async def test_registering_needs_the_token(
    anonymous: ClientSession, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=0)
    async with anonymous.post(f"{BASE}/leases", json={"host": "10.5.0.1", "port": 80}) as r:
        assert r.status == 401
    async with anonymous.delete(f"{BASE}/pods/0/lease") as r:
        assert r.status == 401
    assert await manager.pods(ServiceKey(NAMESPACE, SERVICE)) == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"host": "10.5.0.1", "port": 80, "ttl_s": 0.5}, "ttl_s"),
        ({"host": "10.5.0.1", "port": 80, "ttl_s": 7200}, "ttl_s"),
        ({"host": "10.5.0.1", "name": "pod-0", "port": 80}, "either a host"),
        ({"port": 80}, "either a host"),
        ({"host": "10.5.0.1", "port": 80, "index": None}, "leave the field out rather than null"),
    ],
)
async def test_a_lease_body_that_breaks_the_rules_is_422_saying_why(
    api: Client, manager: StatefulRouteManager, body: dict[str, object], problem: str
) -> None:
    await given_service(manager, pods=0)
    refused = await expect(await api.post(f"{BASE}/leases", json=body), 422, "validation_error")
    assert problem in str(refused["detail"]), refused


async def test_a_lease_for_an_unknown_service_is_404(api: Client) -> None:
    body = {"host": "10.5.0.1", "port": 80}
    await expect(await api.post(f"{BASE}/leases", json=body), 404, "unknown_service")
