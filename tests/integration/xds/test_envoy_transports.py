"""A real Envoy follows our control plane over each transport: REST long-poll, ADS, delta ADS."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from controlplane.domain import PodHealth, PodState, ServiceKey, ServiceState
from controlplane.xds.clients import EnvoyView, Transport
from controlplane.xds.naming import MISS_PATH_CLUSTER
from controlplane.xds.resources import ENDPOINT
from tests.integration.xds.conftest import Plane, eventually, hosts
from tests.support.state import service_state

pytestmark = [pytest.mark.envoy, pytest.mark.asyncio(loop_scope="module")]


def add_service(plane: Plane, namespace: str, name: str, **settings: object) -> ServiceKey:
    plane.source.put(service_state(namespace, name, plane.upstreams.ports, **settings))
    return ServiceKey(namespace, name)


async def wait_for_cluster(plane: Plane, name: str) -> dict[int, dict[str, Any]]:
    async def probe() -> dict[int, dict[str, Any]]:
        return hosts(await plane.envoy.clusters(), name)

    result: dict[int, dict[str, Any]] = await eventually(probe)
    return result


async def get(port: int, host: str, uid: str = "someone") -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/hello", headers={"Host": host, "x-uid": uid}) as r,
    ):
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


def envoy_view(plane: Plane, node_id: str) -> EnvoyView | None:
    return next((v for v in plane.stack.xds.envoys() if v.node_id == node_id), None)


async def test_envoy_holds_our_clusters_endpoints_listener_and_routes(plane: Plane) -> None:
    add_service(plane, "games", "lobby")
    await wait_for_cluster(plane, "games/lobby")

    dump = await plane.envoy.config_dump("dynamic_active_clusters")
    clusters = {c["cluster"]["name"]: c["cluster"] for c in dump["configs"]}
    assert clusters["games/lobby"]["lb_policy"] == "RING_HASH"
    listeners = await plane.envoy.config_dump("dynamic_listeners")
    assert [entry["name"] for entry in listeners["configs"]] == ["stateful-route"]
    routes = await plane.envoy.config_dump("dynamic_route_configs")
    hosts_by_name = {vh["name"]: vh for vh in routes["configs"][0]["route_config"]["virtual_hosts"]}
    assert hosts_by_name["games/lobby"]["domains"] == ["lobby.games", "lobby.games:*"]
    endpoints = await plane.envoy.get("/config_dump?include_eds")
    assert "games/lobby" in endpoints
    assert str(plane.upstreams.ports[0]) in endpoints


async def test_requests_through_the_listener_reach_the_upstreams(plane: Plane) -> None:
    add_service(plane, "games", "chat")
    await wait_for_cluster(plane, "games/chat")

    async def reaches() -> dict[str, Any] | None:
        try:
            return await get(plane.listener_port, "chat.games")
        except (AssertionError, aiohttp.ClientError):
            return None

    answer = await eventually(reaches)
    assert answer["pod"] in range(3)


async def test_sticky_routes_send_a_user_to_its_pod(plane: Plane) -> None:
    key = add_service(plane, "games", "rooms")
    state = plane.source.states[key]
    plane.source.put(ServiceState(state.service, state.pods))
    plane.source.route(key, {"alice": 2, "bob": 0})
    await wait_for_cluster(plane, "games/rooms")

    async def pinned() -> bool:
        try:
            alice = [
                (await get(plane.listener_port, "rooms.games", "alice"))["pod"] for _ in range(4)
            ]
            bob = (await get(plane.listener_port, "rooms.games", "bob"))["pod"]
        except (AssertionError, aiohttp.ClientError):
            return False
        return alice == [2, 2, 2, 2] and bob == 0

    assert await eventually(pinned)


async def test_a_user_whose_pod_lost_its_label_is_refused_not_served_by_another_pod(
    plane: Plane,
) -> None:
    # Until the control plane re-points the user's scope, no pod Envoy picks may serve it:
    # it would be moved again a moment later (a double move, its state split).
    key = add_service(plane, "games", "arena")
    plane.source.route(key, {"carol": 1})
    await wait_for_cluster(plane, "games/arena")

    async def pinned() -> bool:
        try:
            return bool((await get(plane.listener_port, "arena.games", "carol"))["pod"] == 1)
        except (AssertionError, aiohttp.ClientError):
            return False

    assert await eventually(pinned)
    plane.source.update_pod(key, 1, health=PodHealth(state=PodState.DOWN))

    async def status() -> int:
        url = f"http://127.0.0.1:{plane.listener_port}/hello"
        headers = {"Host": "arena.games", "x-uid": "carol"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
            return r.status

    async def refused() -> bool:
        return await status() == 503

    assert await eventually(refused)
    assert [await status() for _ in range(5)] == [503] * 5


async def test_a_user_whose_pod_is_gone_is_served_where_the_control_plane_says_at_once(
    plane: Plane,
) -> None:
    # Before its own scope is re-pointed: the gone pod's route asks the miss path, whose
    # answer here is the scope of a user on pod 2 (the control plane names a placement's).
    key = add_service(plane, "games", "maze")
    plane.source.route(key, {"erin": 1, "frank": 2})
    await wait_for_cluster(plane, "games/maze")

    async def served_by() -> int | None:
        try:
            return int((await get(plane.listener_port, "maze.games", "erin"))["pod"])
        except (AssertionError, aiohttp.ClientError):
            return None

    assert await eventually(lambda: _is(served_by, 1))
    plane.stack.miss_answers.scopes["erin"] = "ufrank"
    plane.source.update_pod(key, 1, health=PodHealth(state=PodState.DOWN))
    assert await eventually(lambda: _is(served_by, 2))
    assert [await served_by() for _ in range(5)] == [2] * 5
    # Envoy still names erin's old placement: nothing re-pointed her scope.
    scope = await erins_scope(plane)
    assert scope == "stateful-route:games/maze=1"


async def _is(probe: Callable[[], Awaitable[int | None]], expected: int) -> bool:
    return await probe() == expected


async def erins_scope(plane: Plane) -> str | None:
    """The RouteConfiguration erin's own scope names in Envoy."""
    dump = await plane.envoy.config_dump("dynamic_scoped_route_configs")
    for config in dump["configs"]:
        for scope in config.get("scoped_route_configs", []):
            scope = scope.get("scoped_route_config", scope)
            if scope["name"] == "uerin":
                route: str = scope["route_configuration_name"]
                return route
    return None


async def test_weight_change_and_unhealthy_pod_show_in_clusters(plane: Plane) -> None:
    key = add_service(plane, "games", "shop")
    await wait_for_cluster(plane, "games/shop")
    first, second = plane.upstreams.ports[0], plane.upstreams.ports[1]

    plane.source.update_pod(key, 0, weight=7)
    plane.source.update_pod(key, 1, health=PodHealth(state=PodState.DOWN))

    async def applied() -> bool:
        shop = hosts(await plane.envoy.clusters(), "games/shop")
        return bool(
            shop[first]["weight"] == 7 * 200
            and shop[second]["health_status"]["eds_health_status"] == "UNHEALTHY"
        )

    assert await eventually(applied)


async def test_rejected_config_is_reported_not_resent_and_last_good_kept(plane: Plane) -> None:
    key = add_service(plane, "games", "bank")
    good = await wait_for_cluster(plane, "games/bank")
    node_id = f"envoy-{plane.transport}-default"

    # Envoy takes only IP addresses in EDS: a hostname makes it reject the assignment.
    plane.source.update_pod(key, 0, host="pod-0.invalid")

    async def nacked() -> EnvoyView | None:
        view = envoy_view(plane, node_id)
        return view if view and view.types[ENDPOINT].nacked_version else None

    view = await eventually(nacked)
    if plane.transport is not Transport.REST:  # REST carries no error detail
        assert "pod-0.invalid" in (view.types[ENDPOINT].nack_message or "")
    attempts_before = await eds_attempts(plane, "games/bank")
    assert attempts_before > 0
    await asyncio.sleep(0.5)
    assert await eds_attempts(plane, "games/bank") - attempts_before <= 1
    assert hosts(await plane.envoy.clusters(), "games/bank").keys() == good.keys()

    plane.source.update_pod(key, 0, host="127.0.0.1", weight=3)

    async def resumed() -> bool:
        bank = hosts(await plane.envoy.clusters(), "games/bank")
        return bool(bank[plane.upstreams.ports[0]]["weight"] == 600)

    assert await eventually(resumed)


async def eds_attempts(plane: Plane, cluster: str) -> int:
    """How many endpoint updates for ``cluster`` Envoy has received, accepted or not."""
    stats = await plane.envoy.get(f"/stats?filter=^cluster.{cluster}.update_attempt$")
    return sum(int(line.partition(": ")[2]) for line in stats.splitlines())


async def test_envoy_restart_resyncs(plane: Plane) -> None:
    key = add_service(plane, "games", "vault")
    await wait_for_cluster(plane, "games/vault")
    await plane.envoy.stop()

    plane.source.update_pod(key, 2, weight=5)
    await plane.envoy.start()

    shop = await wait_for_cluster(plane, "games/vault")
    assert shop[plane.upstreams.ports[2]]["weight"] == 1000


async def test_node_groups_get_their_own_snapshot(plane: Plane) -> None:
    add_service(plane, "blue", "api")
    await wait_for_cluster(plane, "blue/api")
    async with plane.envoy_for("blue") as blue:
        names = {c["name"] for c in (await blue.clusters())["cluster_statuses"]}
        assert names == {"xds_cluster", "blue/api", MISS_PATH_CLUSTER}
        assert (await get(plane.blue_listener_port, "api.blue"))["pod"] in range(3)
        view = envoy_view(plane, f"envoy-{plane.transport}-blue")
        assert view is not None
        assert view.node_group == "blue"
    assert "games/lobby" in {c["name"] for c in (await plane.envoy.clusters())["cluster_statuses"]}


async def test_an_envoy_that_connects_gets_every_users_scope_at_once(plane: Plane) -> None:
    key = add_service(plane, "blue", "crowd")
    users = {f"crowd-{i}": i % 3 for i in range(12_000)}  # delta: more than one batch
    plane.source.route(key, users)
    late = plane.envoy_for("blue")  # the only Envoy of its group, on its own port
    await late.start()
    try:

        async def every_scope() -> bool:
            stats = await late.get("/stats?filter=all_scopes")
            counts = [int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if line]
            return bool(counts) and counts[0] >= len(users)

        await eventually(every_scope, within_s=20)
        sample = list(users)[::1000]
        answers = [
            (await get(plane.blue_listener_port, "crowd.blue", uid))["pod"] for uid in sample
        ]
        assert answers == [users[uid] for uid in sample]
    finally:
        await late.close()
