"""Envoy resources built from a service's state."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from controlplane.domain import PodHealth, PodState, ServiceState, Strategy
from controlplane.xds import resources as res
from controlplane.xds.naming import MOVED_SCRIPT, POD_SUBSET_KEY, SCOPE_KEY_HEADER
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
    assert subsets["subsetSelectors"][0]["keys"] == [POD_SUBSET_KEY]
    assert subsets["subsetSelectors"][0]["singleHostPerSubset"] is True


def test_a_route_naming_a_vanished_pod_label_gets_no_pod_rather_than_one_envoy_picks() -> None:
    # Envoy's pick would serve the user on a pod the control plane then moves it away from.
    cluster = res.build_cluster(service_state("g", "l", [1]).service, ADS_SOURCE).to_dict()
    selector = cluster["lbSubsetConfig"]["subsetSelectors"][0]
    assert selector["fallbackPolicy"] == "NO_FALLBACK"


def test_endpoint_changes_reach_envoys_workers_at_once_not_merged_over_a_second() -> None:
    cluster = res.build_cluster(service_state("g", "l", [1]).service, ADS_SOURCE).to_dict()
    assert cluster["commonLbConfig"]["updateMergeWindow"] == "0s"


def balanced_route(state: ServiceState) -> dict[str, Any]:
    config = res.build_balanced_route([state.service]).to_dict()
    route: dict[str, Any] = config["virtualHosts"][0]["routes"][0]
    return route


def placement_host(state: ServiceState, index: int) -> dict[str, Any]:
    services = {"games/lobby": state.service}
    config = res.build_placement_route(services, (("games/lobby", index),)).to_dict()
    host: dict[str, Any] = config["virtualHosts"][0]
    return host


def test_hashing_services_hash_on_the_uid_header_with_bounded_load() -> None:
    state = service_state("games", "lobby", [9000], uid_header="x-player", hash_balance_factor=1.5)
    cluster = res.build_cluster(state.service, ADS_SOURCE).to_dict()
    assert cluster["lbPolicy"] == "RING_HASH"
    assert cluster["commonLbConfig"]["consistentHashingLbConfig"]["hashBalanceFactor"] == 150
    route = balanced_route(state)["route"]
    assert route["hashPolicy"] == [{"header": {"headerName": "x-player"}}]


def test_least_request_services_carry_no_hash_policy() -> None:
    state = service_state("games", "lobby", [9000], strategy=Strategy.LEAST_CONNECTIONS)
    cluster = res.build_cluster(state.service, ADS_SOURCE).to_dict()
    assert cluster["lbPolicy"] == "LEAST_REQUEST"
    assert "hashPolicy" not in balanced_route(state)["route"]


def test_bound_users_retry_with_no_plugin_and_backed_off_long_enough_for_a_failover() -> None:
    state = service_state("games", "lobby", [9000], envoy={"retry": {"back_off_base_s": 0.2}})
    host = placement_host(state, 0)
    retry = host["retryPolicy"]
    assert retry["retryOn"] == "connect-failure,refused-stream"
    assert retry["numRetries"] == 5
    assert retry["retryBackOff"] == {"baseInterval": "0.200s"}
    assert "retryHostPredicate" not in retry
    assert "retryPolicy" not in host["routes"][0]["route"]


def test_balanced_routes_retry_on_another_pod() -> None:
    retry = balanced_route(service_state("games", "lobby", [9000]))["route"]["retryPolicy"]
    assert retry["retryHostPredicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert retry["retryBackOff"] == {"baseInterval": "0.100s"}


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


def test_bound_users_route_to_their_pods_subset_with_the_miss_path_off() -> None:
    state = service_state("games", "lobby", [9000, 9001], domains=["lobby.example"])
    host = placement_host(state, 1)
    assert host["domains"] == ["lobby.games", "lobby.games:*", "lobby.example"]
    [route] = host["routes"]
    assert route["route"]["cluster"] == "games/lobby"
    assert route["route"]["metadataMatch"] == {
        "filterMetadata": {"envoy.lb": {POD_SUBSET_KEY: "1"}}
    }
    # Envoy then creates no Lua filter for the request; the filter reads "pod" to know its
    # selected scope is live.
    assert route["typedPerFilterConfig"][res.LUA_FILTER]["disabled"] is True
    assert route["metadata"]["filterMetadata"][res.LUA_FILTER] == {"pod": "1"}


def test_one_route_configuration_serves_every_user_of_a_placement() -> None:
    lobby = service_state("games", "lobby", [9000])
    chat = service_state("games", "chat", [9100, 9101])
    services = {"games/lobby": lobby.service, "games/chat": chat.service}
    placement = (("games/chat", 1), ("games/lobby", 0))
    config = res.build_placement_route(services, placement).to_dict()
    assert config["name"] == "stateful-route:games/chat=1;games/lobby=0"
    hosts = {h["name"]: h["routes"][0]["route"]["metadataMatch"] for h in config["virtualHosts"]}
    assert hosts == {
        "games/chat": {"filterMetadata": {"envoy.lb": {POD_SUBSET_KEY: "1"}}},
        "games/lobby": {"filterMetadata": {"envoy.lb": {POD_SUBSET_KEY: "0"}}},
    }


def test_the_route_of_a_pod_that_holds_its_users_no_more_asks_the_miss_path_else_503() -> None:
    lobby = service_state("games", "lobby", [9000], uid_header="x-player")
    chat = service_state("games", "chat", [9100, 9101])
    services = {"games/lobby": lobby.service, "games/chat": chat.service}
    placement = (("games/chat", 1), ("games/lobby", 0))
    config = res.build_placement_route(services, placement, gone={("games/lobby", 0)}).to_dict()
    routes = {h["name"]: h["routes"][0] for h in config["virtualHosts"]}
    moved = routes["games/lobby"]
    # The Lua filter runs its script for gone pods here, which reads what to ask from the
    # route's metadata.
    assert moved["typedPerFilterConfig"][res.LUA_FILTER]["name"] == MOVED_SCRIPT
    assert moved["metadata"]["filterMetadata"][res.LUA_FILTER] == {
        "service": "games/lobby",
        "uid_header": "x-player",
        "moved": "true",
    }
    # What stands when the control plane cannot say: no pod Envoy picks.
    assert moved["directResponse"]["status"] == 503
    assert "route" not in moved
    # The user's other service keeps its pod.
    assert routes["games/chat"]["route"]["metadataMatch"] == {
        "filterMetadata": {"envoy.lb": {POD_SUBSET_KEY: "1"}}
    }


def test_balanced_routes_tell_the_miss_path_the_service_and_its_uid_header() -> None:
    route = balanced_route(service_state("games", "lobby", [9000], uid_header="x-player"))
    about = route["metadata"]["filterMetadata"][res.LUA_FILTER]
    assert about == {"service": "games/lobby", "uid_header": "x-player"}
    assert route["typedPerFilterConfig"][res.LUA_FILTER]["disabled"] is True


def test_the_listener_keys_scopes_on_the_uid_headers_and_runs_only_lua_and_the_router() -> None:
    listener = res.build_listener(
        "127.0.0.1", 10000, ADS_SOURCE, ["x-player", "x-uid"], "edge"
    ).to_dict()
    manager = listener["filterChains"][0]["filters"][0]["typedConfig"]
    [early] = manager["earlyHeaderMutationExtensions"][0]["typedConfig"]["mutations"]
    header = early["append"]["header"]
    # Overwrites a client's own copy: nobody selects another user's scope.
    assert early["append"]["appendAction"] == "OVERWRITE_IF_EXISTS_OR_ADD"
    assert (header["key"], header["value"]) == (SCOPE_KEY_HEADER, "u%REQ(x-player)% %REQ(x-uid)%")
    scoped = manager["scopedRoutes"]
    [fragment] = scoped["scopeKeyBuilder"]["fragments"]
    assert fragment["headerValueExtractor"]["name"] == SCOPE_KEY_HEADER
    assert "scopedRdsConfigSource" in scoped["scopedRds"]
    assert [f["name"] for f in manager["httpFilters"]] == [
        res.LUA_FILTER,
        "envoy.filters.http.router",
    ]
    lua = manager["httpFilters"][0]["typedConfig"]
    on_miss = lua["defaultSourceCode"]["inlineString"]
    on_moved = lua["sourceCodes"][MOVED_SCRIPT]["inlineString"]
    for script in (on_miss, on_moved):
        assert '"edge"' in script  # the group, so the control plane waits for the right Envoys
        assert not re.search(r"@[A-Z_]+@", script)  # every placeholder filled in
    assert on_miss.endswith("envoy_on_request = on_miss\n")
    assert on_moved.endswith("envoy_on_request = on_moved\n")


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


@pytest.mark.parametrize("unresolved", [[0], [1], [0, 1]])
def test_a_pod_whose_name_does_not_resolve_is_no_endpoint(unresolved: list[int]) -> None:
    state = service_state("games", "lobby", [9000, 9001])
    pods = [
        p.model_copy(update={"host": None, "name": f"pod-{p.index}"})
        if p.index in unresolved
        else p
        for p in state.pods
    ]
    weights = {p.index: 1 for p in pods}
    message = res.build_load_assignment(state.service.key, pods, weights)
    hostnames = [e.endpoint.hostname for g in message.endpoints for e in g.lb_endpoints]
    assert hostnames == [f"pod-{i}" for i in (0, 1) if i not in unresolved]
    assert res.load_assignment_json(state.service.key, pods, weights) == message.to_dict()


def test_a_placement_route_sets_the_pods_epoch_header_only_when_the_service_asks() -> None:
    plain = service_state("games", "lobby", [9000, 9001])
    fenced = service_state(
        "games", "lobby", [9000, 9001], failover={"epoch_header": "x-stateful-route-epoch"}
    )
    epochs = {("games/lobby", 1): 7}
    placement = (("games/lobby", 1),)
    assert "requestHeadersToAdd" not in placement_host(plain, 1)
    config = res.build_placement_route({"games/lobby": fenced.service}, placement, epochs)
    [header] = config.to_dict()["virtualHosts"][0]["requestHeadersToAdd"]
    # Overwrites whatever the client sent: a client cannot claim a newer epoch.
    assert header == {
        "header": {"key": "x-stateful-route-epoch", "value": "7"},
        "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
    fresh = res.build_placement_route({"games/lobby": fenced.service}, (("games/lobby", 0),))
    assert fresh.to_dict()["virtualHosts"][0]["requestHeadersToAdd"][0]["header"]["value"] == "0"
