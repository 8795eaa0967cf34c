"""The ext_authz check endpoint, called the way Envoy calls it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controlplane.admin.metrics import AdminMetrics
from controlplane.domain import Pod, Service, ServiceSettings
from controlplane.manager import StatefulRouteManager
from controlplane.misspath import MissPath
from controlplane.store import Store
from controlplane.xds.naming import SERVICE_HEADER, SESSION_HEADER

HEADERS = {SERVICE_HEADER: "games/lobby"}


@pytest.fixture
async def manager(store: Store) -> AsyncIterator[StatefulRouteManager]:
    manager = StatefulRouteManager(store)
    await manager.register_service(
        Service(namespace="games", name="lobby", settings=ServiceSettings(uid_header="x-player"))
    )
    for index in range(3):
        await manager.upsert_pod(
            "games", "lobby", Pod(index=index, host="10.0.0.1", port=9000 + index)
        )
    yield manager
    await manager.close()


@pytest.fixture
async def client(
    manager: StatefulRouteManager,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.router.add_routes(MissPath(manager, AdminMetrics()).routes())
    async with TestClient(TestServer(app)) as client:
        yield client


def pod_of(response_headers: object) -> str:
    value = response_headers[SESSION_HEADER]  # type: ignore[index]
    return base64.b64decode(value).decode()


async def test_a_new_user_gets_its_pod_in_the_session_header_and_keeps_it(
    client: TestClient,  # type: ignore[type-arg]
    manager: StatefulRouteManager,
) -> None:
    first = await client.get("/ext_authz/some/path", headers={**HEADERS, "x-player": "alice"})
    again = await client.post("/ext_authz/", headers={**HEADERS, "x-player": "alice"})
    assert first.status == again.status == 200
    assert pod_of(first.headers) == pod_of(again.headers)
    assert pod_of(first.headers).startswith("10.0.0.1:900")
    binding = await manager.get_binding("games", "lobby", "alice")
    assert pod_of(first.headers) == f"10.0.0.1:{9000 + binding.pod}"


async def test_requests_without_a_user_or_service_pass_unrouted(client: TestClient) -> None:  # type: ignore[type-arg]
    for headers in ({}, HEADERS, {SERVICE_HEADER: "nope/none", "x-player": "bob"}):
        response = await client.get("/ext_authz/", headers=headers)
        assert response.status == 200
        assert SESSION_HEADER not in response.headers


async def test_an_invalid_uid_is_refused_and_never_bound(client: TestClient, store: Store) -> None:  # type: ignore[type-arg]
    response = await client.get("/ext_authz/", headers={**HEADERS, "x-player": "x" * 300})
    assert response.status == 400
    assert [key async for key in store.redis.scan_iter("*:b")] == []
