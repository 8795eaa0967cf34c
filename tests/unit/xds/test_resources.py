"""Envoy resources built from a service's state."""

from __future__ import annotations

import pytest

from controlplane.domain import PodHealth, PodState, Strategy
from controlplane.xds import resources as res
from tests.support.state import service_state

ADS_SOURCE = res.config_source(res.SourceKind.ADS)


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (PodState.HEALTHY, "HEALTHY"),
        (PodState.SUSPECT, "HEALTHY"),
        (PodState.DRAINING, "DRAINING"),
        (PodState.EJECTED, "UNHEALTHY"),
        (PodState.DOWN, "UNHEALTHY"),
        (PodState.RECOVERING, "UNHEALTHY"),
    ],
)
def test_endpoint_health_follows_the_pod_lifecycle(state: PodState, status: str) -> None:
    service = service_state("games", "lobby", [9000])
    pod = service.pods[0].model_copy(update={"health": PodHealth(state=state)})
    assignment = res.build_load_assignment(service.service.key, [pod], {0: 5}).to_dict()
    endpoint = assignment["endpoints"][0]["lbEndpoints"][0]
    assert endpoint["healthStatus"] == status
    assert endpoint["loadBalancingWeight"] == 5


def test_hashing_services_hash_on_the_uid_header_with_bounded_load() -> None:
    state = service_state("games", "lobby", [9000], uid_header="x-player", hash_balance_factor=1.5)
    cluster = res.build_cluster(state.service, ADS_SOURCE).to_dict()
    assert cluster["lbPolicy"] == "RING_HASH"
    assert cluster["commonLbConfig"]["consistentHashingLbConfig"]["hashBalanceFactor"] == 150
    route = res.build_virtual_host(state.service).to_dict()["routes"][-1]["route"]
    assert route["hashPolicy"] == [{"header": {"headerName": "x-player"}}]


def test_least_request_services_carry_no_hash_policy() -> None:
    state = service_state("games", "lobby", [9000], strategy=Strategy.LEAST_CONNECTIONS)
    cluster = res.build_cluster(state.service, ADS_SOURCE).to_dict()
    assert cluster["lbPolicy"] == "LEAST_REQUEST"
    assert "hashPolicy" not in res.build_virtual_host(state.service).to_dict()["routes"][0]["route"]


def test_protections_are_configurable_per_service() -> None:
    envoy = {
        "outlier_detection": None,
        "active_health_check": {"path": "/ready"},
        "circuit_breakers": {"max_requests": 7},
    }
    state = service_state("games", "lobby", [9000], envoy=envoy)
    cluster = res.build_cluster(state.service, ADS_SOURCE).to_dict()
    assert "outlierDetection" not in cluster
    assert cluster["healthChecks"][0]["httpHealthCheck"]["path"] == "/ready"
    assert cluster["circuitBreakers"]["thresholds"][0]["maxRequests"] == 7


def test_sticky_users_get_a_route_to_their_pod_before_the_service_route() -> None:
    state = service_state("games", "lobby", [9000, 9001])
    routes = res.build_virtual_host(state.service, [("bob", 1)]).to_dict()["routes"]
    assert routes[0]["match"]["headers"] == [{"name": "x-uid", "stringMatch": {"exact": "bob"}}]
    assert routes[0]["route"]["metadataMatch"] == {"filterMetadata": {"envoy.lb": {"pod": "1"}}}
    assert "headers" not in routes[1]["match"]
