"""Envoys' load reports through the manager and Redis: failures and load of the fleet."""

from __future__ import annotations

from controlplane.domain import PodState, RouteRequest
from controlplane.domain.fleet_evidence import EndpointLoad, EvidenceRules
from controlplane.manager import StatefulRouteManager
from controlplane.signals.load_reports import FleetLoadSignals

from .conftest import KEY, NS, SVC, Clock, MakeService

CLUSTER = f"{NS}/{SVC}"
INTERVAL_S = 1.0


def replica(manager: StatefulRouteManager, name: str, clock: Clock) -> FleetLoadSignals:
    return FleetLoadSignals(
        manager, EvidenceRules(), replica=name, interval_s=INTERVAL_S, clock=clock
    )


async def in_flight(manager: StatefulRouteManager) -> dict[int, int]:
    return {p.index: p.load.active_requests for p in await manager.pods(KEY)}


async def test_requests_in_flight_are_summed_over_every_replicas_envoys(
    make_service: MakeService, clock: Clock
) -> None:
    manager = await make_service()
    clock.now = 1000.0
    a, b = replica(manager, "a", clock), replica(manager, "b", clock)
    await a.load_reported("envoy-1", [EndpointLoad(CLUSTER, "127.0.0.1:9000", in_flight=3)])
    await b.load_reported("envoy-2", [EndpointLoad(CLUSTER, "127.0.0.1:9000", in_flight=4)])
    await b.load_reported("envoy-3", [EndpointLoad(CLUSTER, "127.0.0.1:9001", in_flight=1)])
    await b.publish_load()
    await a.publish_load()  # either replica may lead: both write, the leader sums
    assert await in_flight(manager) == {0: 7, 1: 1, 2: 0, 3: 0}

    clock.now += 3 * INTERVAL_S + 0.1  # replica b stopped publishing (it died)
    await a.publish_load()
    assert await in_flight(manager) == {0: 3, 1: 0, 2: 0, 3: 0}

    await a.envoy_gone("envoy-1")
    await a.publish_load()
    assert await in_flight(manager) == {0: 0, 1: 0, 2: 0, 3: 0}


async def test_a_pod_the_envoys_requests_fail_on_goes_down_and_its_users_move(
    make_service: MakeService, clock: Clock
) -> None:
    manager = await make_service()
    fleet = replica(manager, "a", clock)
    for i in range(8):
        await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid=f"u{i}"))
    assert (await manager.users_on_pod(KEY, 0)).users  # the pod has users to move

    failing = EndpointLoad(CLUSTER, "127.0.0.1:9000", errors=3)
    await fleet.load_reported("envoy-1", [failing])

    [pod] = [p for p in await manager.pods(KEY) if p.index == 0]
    assert pod.state is PodState.DOWN
    assert pod.health.reason == "envoy load reports: 3 errors, failing for 1 of 1 envoys"
    assert not (await manager.users_on_pod(KEY, 0)).users


async def test_endpoints_of_unknown_clusters_and_addresses_are_ignored(
    make_service: MakeService, clock: Clock
) -> None:
    manager = await make_service()
    fleet = replica(manager, "a", clock)
    await fleet.load_reported(
        "envoy-1",
        [
            EndpointLoad("xds_cluster", "127.0.0.1:18001", errors=9, in_flight=1),
            EndpointLoad("other/svc", "127.0.0.1:9000", errors=9, in_flight=1),
            EndpointLoad(CLUSTER, "10.9.9.9:9000", errors=9, in_flight=1),
        ],
    )
    await fleet.publish_load()
    pods = await manager.pods(KEY)
    assert all(p.state is PodState.HEALTHY for p in pods)
    assert all(p.load.active_requests == 0 for p in pods)
