"""Envoy resources built from a service's state."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.domain import PodHealth, PodState, ServiceState, Strategy
from controlplane.xds import resources as res
from controlplane.xds.naming import POD_SUBSET_KEY, SERVICE_HEADER, SESSION_HEADER
from controlplane.xds.render import render
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


@pytest.mark.parametrize(
    ("state", "labelled"),
    [
        (PodState.HEALTHY, True),
        (PodState.SUSPECT, True),
        (PodState.DRAINING, True),
        (PodState.EJECTED, False),
        (PodState.DOWN, False),
        (PodState.RECOVERING, False),
    ],
)
def test_a_pod_carries_its_subset_label_while_it_keeps_its_bound_users(
    state: PodState, labelled: bool
) -> None:
    service = service_state("games", "lobby", [9000, 9001])
    pod = service.pods[1].model_copy(update={"health": PodHealth(state=state)})
    assignment = res.build_load_assignment(service.service.key, [pod], {1: 1}).to_dict()
    endpoint = assignment["endpoints"][0]["lbEndpoints"][0]
    label = endpoint.get("metadata", {}).get("filterMetadata", {}).get("envoy.lb")
    assert label == ({POD_SUBSET_KEY: "1"} if labelled else None)


def test_each_labelled_pod_is_a_subset_of_its_own_and_other_routes_use_the_balancer() -> None:
    cluster = res.build_cluster(service_state("g", "l", [1]).service, ADS_SOURCE).to_dict()
    subsets = cluster["lbSubsetConfig"]
    assert subsets["fallbackPolicy"] == "ANY_ENDPOINT"
    assert subsets["subsetSelectors"] == [{"keys": [POD_SUBSET_KEY], "singleHostPerSubset": True}]


def fallback_route(state: ServiceState) -> dict[str, Any]:
    host = res.build_virtual_host(state.service, state.pods, {}).to_dict()
    route: dict[str, Any] = host["matcher"]["onNoMatch"]["action"]["typedConfig"]
    return route


def test_hashing_services_hash_on_the_uid_header_with_bounded_load() -> None:
    state = service_state("games", "lobby", [9000], uid_header="x-player", hash_balance_factor=1.5)
    cluster = res.build_cluster(state.service, ADS_SOURCE).to_dict()
    assert cluster["lbPolicy"] == "RING_HASH"
    assert cluster["commonLbConfig"]["consistentHashingLbConfig"]["hashBalanceFactor"] == 150
    route = fallback_route(state)["route"]
    assert route["hashPolicy"] == [{"header": {"headerName": "x-player"}}]


def test_least_request_services_carry_no_hash_policy() -> None:
    state = service_state("games", "lobby", [9000], strategy=Strategy.LEAST_CONNECTIONS)
    cluster = res.build_cluster(state.service, ADS_SOURCE).to_dict()
    assert cluster["lbPolicy"] == "LEAST_REQUEST"
    assert "hashPolicy" not in fallback_route(state)["route"]


def test_bound_users_retry_with_no_plugin_and_backed_off_long_enough_for_a_failover() -> None:
    state = service_state("games", "lobby", [9000], envoy={"retry": {"back_off_base_s": 0.2}})
    retry = res.build_virtual_host(state.service, state.pods, {}).to_dict()["retryPolicy"]
    assert retry["retryOn"] == "connect-failure,refused-stream"
    assert retry["numRetries"] == 5
    assert retry["retryBackOff"] == {"baseInterval": "0.200s"}
    assert "retryHostPredicate" not in retry


def test_the_fallback_route_retries_on_another_pod() -> None:
    retry = fallback_route(service_state("games", "lobby", [9000]))["route"]["retryPolicy"]
    assert retry["retryHostPredicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert retry["retryBackOff"] == {"baseInterval": "0.100s"}


def test_a_session_may_pin_a_draining_pod_but_not_one_envoy_ejected() -> None:
    cluster = res.build_cluster(service_state("g", "l", [1]).service, ADS_SOURCE).to_dict()
    statuses = set(cluster["commonLbConfig"]["overrideHostStatus"]["statuses"])
    assert "DRAINING" in statuses
    assert "UNHEALTHY" not in statuses


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


def test_bound_users_route_to_their_pods_subset_with_no_filter_on() -> None:
    state = service_state("games", "lobby", [9000, 9001])
    host = res.build_virtual_host(state.service, state.pods, {"bob": 1}).to_dict()
    tree = host["matcher"]["matcherTree"]
    assert tree["input"]["typedConfig"]["headerName"] == "x-uid"
    route = tree["exactMatchMap"]["map"]["bob"]["action"]["typedConfig"]
    assert route["route"]["cluster"] == "games/lobby"
    assert route["route"]["metadataMatch"] == {
        "filterMetadata": {"envoy.lb": {POD_SUBSET_KEY: "1"}}
    }
    assert "typedPerFilterConfig" not in route
    assert "typedPerFilterConfig" not in host


def test_everyone_else_turns_on_the_miss_path_naming_the_service_and_the_session_pin() -> None:
    state = service_state("games", "lobby", [9000])
    per_filter = fallback_route(state)["typedPerFilterConfig"]
    enabled = {name: config["config"] for name, config in per_filter.items()}
    assert enabled["envoy.filters.http.ext_authz"]["checkSettings"] == {}
    mutations = enabled["envoy.filters.http.header_mutation"]["mutations"]
    header = mutations["requestMutations"][0]["append"]["header"]
    assert (header["key"], header["value"]) == (SERVICE_HEADER, "games/lobby")
    session = enabled["envoy.filters.http.stateful_session"]["statefulSession"]
    assert session["sessionState"]["typedConfig"]["name"] == SESSION_HEADER


def test_with_no_bound_user_the_matcher_has_no_map() -> None:
    state = service_state("games", "lobby", [9000])
    host = res.build_virtual_host(state.service, state.pods, {"ghost": 5}).to_dict()
    assert "matcherTree" not in host["matcher"]


def test_the_listener_strips_internal_headers_and_sends_uid_headers_to_the_miss_path() -> None:
    listener = res.build_listener("127.0.0.1", 10000, ADS_SOURCE, ["x-player", "x-uid"]).to_dict()
    manager = listener["filterChains"][0]["filters"][0]["typedConfig"]
    early = manager["earlyHeaderMutationExtensions"][0]["typedConfig"]["mutations"]
    assert {m["remove"] for m in early} == {SESSION_HEADER, SERVICE_HEADER}
    filters = [(f["name"], f.get("disabled", False)) for f in manager["httpFilters"]]
    # Off unless a route turns them on: a bound user's request runs the router alone.
    assert filters == [
        ("envoy.filters.http.header_mutation", True),
        ("envoy.filters.http.ext_authz", True),
        ("envoy.filters.http.stateful_session", True),
        ("envoy.filters.http.router", False),
    ]
    authz = manager["httpFilters"][1]["typedConfig"]
    allowed = {p["exact"] for p in authz["allowedHeaders"]["patterns"]}
    assert allowed == {SERVICE_HEADER, "x-player", "x-uid"}
    assert authz["failureModeAllow"] is True


def test_envoy_health_check_events_go_to_the_file_the_control_plane_follows() -> None:
    envoy = {"active_health_check": {"path": "/ready"}}
    state = service_state("games", "lobby", [9000], envoy=envoy)
    cluster = res.build_cluster(state.service, ADS_SOURCE, "/var/log/envoy/hc.log").to_dict()
    [sink] = cluster["healthChecks"][0]["eventLogger"]
    assert sink["typedConfig"]["eventLogPath"] == "/var/log/envoy/hc.log"


def test_the_rest_json_of_a_cluster_spells_field_names_as_envoy_reads_them() -> None:
    cluster = res.build_cluster(service_state("g", "l", [1]).service, ADS_SOURCE)
    as_json = json.loads(render(res.CLUSTER, cluster.name, cluster).json)
    assert as_json["outlierDetection"]["consecutive5xx"] == 5


def test_the_miss_path_cluster_prefers_ipv4() -> None:
    cluster = res.build_miss_path_cluster("localhost", 18000).to_dict()
    assert cluster["dnsLookupFamily"] == "V4_PREFERRED"


@pytest.mark.parametrize("states", [[], [PodState.HEALTHY], list(PodState)])
def test_load_assignment_json_equals_the_messages_own(states: list[PodState]) -> None:
    state = service_state("games", "lobby", [9000 + i for i in range(len(states))])
    pods = [
        p.model_copy(update={"health": PodHealth(state=s)})
        for p, s in zip(state.pods, states, strict=True)
    ]
    weights = {p.index: 7 * (p.index + 1) for p in pods}
    message = res.build_load_assignment(state.service.key, pods, weights)
    assert res.load_assignment_json(state.service.key, pods, weights) == message.to_dict()
