"""The miss path endpoint, called the way Envoy's Lua filter calls it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from controlplane.admin.metrics import AdminMetrics
from controlplane.domain import (
    FailoverType,
    NewUserLimits,
    OverLimit,
    Pod,
    Service,
    ServiceKey,
    ServiceSettings,
)
from controlplane.manager import StatefulRouteManager
from controlplane.misspath import MissPath
from controlplane.store import Store
from controlplane.xds.cache import SnapshotKey
from controlplane.xds.clients import Transport
from controlplane.xds.naming import (
    GROUP_HEADER,
    MISS_PATH,
    MOVED_HEADER,
    SCOPE_KEY_HEADER,
    SERVICE_HEADER,
    UID_HEADER,
)
from controlplane.xds.protocol import Reply, Verdict
from controlplane.xds.resources import SCOPED, SourceKind
from controlplane.xds.server import XdsServer

Client = TestClient[web.Request, web.Application]


def asking(uid: str, service: str = "games/lobby") -> dict[str, str]:
    return {SERVICE_HEADER: service, UID_HEADER: uid, GROUP_HEADER: "default"}


@pytest.fixture
async def manager(store: Store) -> AsyncIterator[StatefulRouteManager]:
    manager = StatefulRouteManager(store)
    await manager.register_service(
        Service(namespace="games", name="lobby", settings=ServiceSettings(uid_header="x-player"))
    )
    for index in range(3):
        await manager.upsert_pod(
            ServiceKey("games", "lobby"), Pod(index=index, host="10.0.0.1", port=9000 + index)
        )
    yield manager
    await manager.close()


@pytest.fixture
async def xds(manager: StatefulRouteManager) -> AsyncIterator[XdsServer]:
    server = XdsServer(manager)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, manager: StatefulRouteManager, xds: XdsServer
) -> Client:
    app = web.Application()
    app.router.add_routes(MissPath(manager, AdminMetrics(), xds).routes())
    return await aiohttp_client(app)


async def test_a_new_user_is_bound_and_told_the_scope_of_its_pod(
    client: Client, xds: XdsServer, manager: StatefulRouteManager
) -> None:
    xds.cache.snapshot(SnapshotKey("default", SourceKind.ADS))  # what a connecting Envoy asks
    first = await client.post(MISS_PATH, headers=asking("alice"))
    again = await client.post(MISS_PATH, headers=asking("alice"))
    assert first.status == again.status == 200
    pod = (await manager.get_binding(ServiceKey("games", "lobby"), "alice")).pod
    key = f"=stateful-route:games/lobby={pod}"  # the placement's scope, not alice's own
    assert first.headers[SCOPE_KEY_HEADER] == again.headers[SCOPE_KEY_HEADER] == key
    assert manager.sticky.routes(ServiceKey("games", "lobby"))["alice"] == pod


async def test_a_group_with_no_envoy_here_gets_no_scope_but_the_user_is_bound(
    client: Client, manager: StatefulRouteManager
) -> None:
    answer = await client.post(MISS_PATH, headers=asking("dave"))
    assert answer.status == 503  # the Lua filter then lets Envoy balance the request
    assert (await manager.get_binding(ServiceKey("games", "lobby"), "dave")).pod in range(3)


async def test_the_answer_waits_until_the_groups_envoys_hold_the_scope(
    client: Client, xds: XdsServer
) -> None:
    xds.cache.snapshot(SnapshotKey("default", SourceKind.ADS))  # what a connecting Envoy asks
    envoy = xds.clients.enter("envoy-1", "default", Transport.DELTA)
    xds.clients.record(envoy, SCOPED, Reply(Verdict.ACK, "e.0.0"))  # holds revision 0 only
    answer = asyncio.ensure_future(client.post(MISS_PATH, headers=asking("bob")))
    await asyncio.sleep(0.1)
    assert not answer.done()
    revision = xds.cache.users.revision("default")
    assert revision > 0
    xds.clients.record(envoy, SCOPED, Reply(Verdict.ACK, f"e.{revision}.0"))
    assert (await asyncio.wait_for(answer, 1)).status == 200


async def test_unknown_services_and_missing_users_are_client_errors(
    client: Client, store: Store
) -> None:
    assert (await client.post(MISS_PATH, headers=asking("bob", "nope/none"))).status == 404
    assert (await client.post(MISS_PATH, headers=asking(""))).status == 400
    assert (await client.post(MISS_PATH, headers={})).status == 400
    assert [key async for key in store.redis.scan_iter("*:b")] == []


async def test_an_invalid_uid_is_refused_and_never_bound(client: Client, store: Store) -> None:
    response = await client.post(MISS_PATH, headers=asking("x" * 300))
    assert response.status == 400
    assert [key async for key in store.redis.scan_iter("*:b")] == []


@pytest.mark.parametrize(("over_limit", "status"), [("balance", 503), ("reject", 429)])
async def test_a_new_user_past_the_services_limits_is_balanced_or_rejected_as_it_says(
    aiohttp_client: AiohttpClient,
    manager: StatefulRouteManager,
    xds: XdsServer,
    over_limit: str,
    status: int,
) -> None:
    metrics = AdminMetrics()
    app = web.Application()
    app.router.add_routes(MissPath(manager, metrics, xds).routes())
    client = await aiohttp_client(app)
    xds.cache.snapshot(SnapshotKey("default", SourceKind.ADS))
    assert (await client.post(MISS_PATH, headers=asking("alice"))).status == 200
    limits = NewUserLimits(max_bound_users=1, over_limit=OverLimit(over_limit))
    settings = ServiceSettings(uid_header="x-player", new_users=limits)
    await manager.register_service(Service(namespace="games", name="lobby", settings=settings))

    stranger = await client.post(MISS_PATH, headers=asking("stranger"))
    alice = await client.post(MISS_PATH, headers=asking("alice"))

    assert stranger.status == status  # 503: the filter balances it; 429: it answers 429
    assert alice.status == 200
    labels = {"namespace": "games", "service": "lobby", "reason": "max_bound_users"}
    refused = metrics.registry.get_sample_value("stateful_route_new_users_refused_total", labels)
    assert refused == 1


async def test_a_failed_pods_route_learns_only_where_its_failover_moved_a_user(
    aiohttp_client: AiohttpClient, store: Store, manager: StatefulRouteManager
) -> None:
    leader = StatefulRouteManager(store, view_ttl_s=0.0)  # sees the follower's change at once
    # The route of a failed pod asks with MOVED_HEADER: it must not place the user itself, or
    # users would leave the pod without its failover (and its event) knowing.
    lobby = ServiceKey("games", "lobby")
    for uid in ("erin", "frank"):
        await leader.migrate_user(lobby, uid, 1)
    follower = StatefulRouteManager(store, view_ttl_s=0.0, is_leader=lambda: False)
    xds = XdsServer(follower)
    await xds.start()
    try:
        xds.cache.snapshot(SnapshotKey("default", SourceKind.ADS))
        app = web.Application()
        app.router.add_routes(MissPath(follower, AdminMetrics(), xds).routes())
        client = await aiohttp_client(app)
        await follower.handle_pod_failure(lobby, 1, "test")  # the leader's job to move them
        moved = {**asking("erin"), MOVED_HEADER: "1"}
        assert (await client.post(MISS_PATH, headers=moved)).status == 503
        assert (await leader.get_binding(lobby, "erin")).pod == 1  # still there
        await leader.failover.reconcile()  # the leader moves the failed pod's users
        pod = (await leader.get_binding(lobby, "erin")).pod
        answer = await client.post(MISS_PATH, headers=moved)
        assert answer.status == 200
        assert answer.headers[SCOPE_KEY_HEADER] == f"=stateful-route:games/lobby={pod}"
        [event] = await leader.get_failover_history(lobby, 1, kind=FailoverType.POD_FAILURE)
        assert (event.pod, event.affected_users) == (1, 2)
    finally:
        await xds.stop()
        await follower.close()
        await leader.close()
