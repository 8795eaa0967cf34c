"""Snapshots: built from state, versioned by content, rebuilt only where a service changed."""

from __future__ import annotations

import json

import pytest

from controlplane.domain import PodHealth, PodState, ServiceKey, ServiceState
from controlplane.xds import resources as res
from controlplane.xds.cache import (
    InconsistentSnapshot,
    SnapshotCache,
    SnapshotKey,
    _check_consistent,
)
from controlplane.xds.config import XdsSettings
from controlplane.xds.naming import MISS_PATH_CLUSTER
from controlplane.xds.render import render
from tests.support.state import service_state

ADS = SnapshotKey("default", res.SourceKind.ADS)
REST = SnapshotKey("default", res.SourceKind.REST)
LOBBY = ServiceKey("games", "lobby")


def cache_with(*states: ServiceState, **settings: object) -> SnapshotCache:
    cache = SnapshotCache(XdsSettings.model_validate(settings))
    cache.replace_all(states)
    return cache


def with_pod(state: ServiceState, index: int, **changes: object) -> ServiceState:
    pods = tuple(p.model_copy(update=changes) if p.index == index else p for p in state.pods)
    return ServiceState(state.service, pods, state.routes)


def test_a_snapshot_holds_every_type_for_every_service() -> None:
    cache = cache_with(service_state("games", "lobby", [9000, 9001]), service_state("a", "b", [1]))
    snapshot = cache.snapshot(ADS)
    assert list(snapshot.type(res.CLUSTER).resources) == [
        "a/b",
        "games/lobby",
        MISS_PATH_CLUSTER,
    ]
    assert list(snapshot.type(res.ENDPOINT).resources) == ["a/b", "games/lobby"]
    assert list(snapshot.type(res.LISTENER).resources) == ["stateful-route"]
    assert list(snapshot.type(res.ROUTE).resources) == ["stateful-route"]


def test_a_pod_change_renders_only_that_service_endpoints() -> None:
    lobby = service_state("games", "lobby", [9000, 9001])
    cache = cache_with(lobby, service_state("a", "b", [1]))
    before = cache.snapshot(ADS)

    cache.update({LOBBY: with_pod(lobby, 1, health=PodHealth(state=PodState.DRAINING))})
    after = cache.snapshot(ADS)

    assert after.type(res.CLUSTER) is before.type(res.CLUSTER)
    assert after.type(res.ROUTE) is before.type(res.ROUTE)
    old, new = before.type(res.ENDPOINT), after.type(res.ENDPOINT)
    assert new.resources["a/b"] is old.resources["a/b"]
    assert new.versions["games/lobby"] != old.versions["games/lobby"]


def test_a_sticky_route_change_reaches_every_group_and_kind() -> None:
    lobby = service_state("games", "lobby", [9000, 9001])
    cache = cache_with(lobby)
    before = {key: cache.snapshot(key).type(res.ROUTE).version for key in (ADS, REST)}
    cache.update({LOBBY: ServiceState(lobby.service, lobby.pods, routes={"bob": 1})})
    for key, version in before.items():
        assert cache.snapshot(key).type(res.ROUTE).version != version


def test_an_unchanged_update_publishes_nothing() -> None:
    lobby = service_state("games", "lobby", [9000])
    cache = cache_with(lobby)
    before = cache.snapshot(ADS)
    generation = cache.generation
    cache.update({LOBBY: lobby})
    assert cache.snapshot(ADS) is before
    assert cache.generation == generation


def test_versions_follow_content_across_caches() -> None:
    lobby = service_state("games", "lobby", [9000])
    first, second = cache_with(lobby), cache_with(lobby)
    assert (
        first.snapshot(ADS).type(res.CLUSTER).version
        == second.snapshot(ADS).type(res.CLUSTER).version
    )


def test_removed_service_leaves_every_type() -> None:
    cache = cache_with(service_state("games", "lobby", [9000]))
    cache.snapshot(ADS)
    cache.update({LOBBY: None})
    assert list(cache.snapshot(ADS).type(res.CLUSTER).resources) == [MISS_PATH_CLUSTER]


def test_node_groups_see_their_namespaces_and_their_listener_port() -> None:
    cache = cache_with(
        service_state("games", "lobby", [9000]),
        service_state("blue", "api", [9001]),
        node_groups={"blue": {"listener_port": 11000, "namespaces": ["blue"]}},
    )
    blue = cache.snapshot(SnapshotKey("blue", res.SourceKind.ADS))
    assert list(blue.type(res.CLUSTER).resources) == ["blue/api", MISS_PATH_CLUSTER]
    assert blue.type(res.LISTENER).version != cache.snapshot(ADS).type(res.LISTENER).version


def test_rest_and_ads_clusters_name_their_own_config_source() -> None:
    cache = cache_with(service_state("games", "lobby", [9000]))
    rest = json.loads(cache.snapshot(REST).type(res.CLUSTER).resources["games/lobby"].json)
    ads = json.loads(cache.snapshot(ADS).type(res.CLUSTER).resources["games/lobby"].json)
    assert "apiConfigSource" in rest["edsClusterConfig"]["edsConfig"]
    assert "ads" in ads["edsClusterConfig"]["edsConfig"]


def test_views_cache_their_response_bodies_per_version() -> None:
    cache = cache_with(service_state("games", "lobby", [9000]))
    endpoints = cache.snapshot(REST).type(res.ENDPOINT)
    view = endpoints.view(("games/lobby",))
    body = view.rest_body(res.ENDPOINT)
    assert endpoints.view(("games/lobby",)).rest_body(res.ENDPOINT) is body
    parsed = json.loads(body)
    assert parsed["version_info"] == view.version == endpoints.versions["games/lobby"]
    assert parsed["resources"][0]["@type"] == res.ENDPOINT
    assert endpoints.view(("missing",)).resources == ()


def test_route_configuration_assembled_from_parts_equals_one_built_whole() -> None:
    lobby = service_state("games", "lobby", [9000, 9001])
    lobby = ServiceState(lobby.service, lobby.pods, routes={"bob": 1, "alice": 0, "gone": 7})
    other = service_state("a", "b", [1])
    cache = cache_with(lobby, other)
    assembled = cache.snapshot(REST).type(res.ROUTE).resources["stateful-route"]
    whole = res.build_route_configuration()
    whole.virtual_hosts = [
        res.build_virtual_host(other.service, other.pods, {}),
        res.build_virtual_host(lobby.service, lobby.pods, {"bob": 1, "alice": 0}),
    ]
    expected = render(res.ROUTE, "stateful-route", whole)
    assert assembled.proto == expected.proto
    assert json.loads(assembled.json) == json.loads(expected.json)


def test_one_changed_user_reuses_every_other_users_entry() -> None:
    lobby = service_state("games", "lobby", [9000, 9001])
    routes = {f"u{i}": i % 2 for i in range(100)}
    cache = cache_with(ServiceState(lobby.service, lobby.pods, routes=routes))
    first = cache.snapshot(ADS).type(res.ROUTE)
    moved = {**routes, "u0": 1}
    cache.update({LOBBY: ServiceState(lobby.service, lobby.pods, routes=moved)})
    second = cache.snapshot(ADS).type(res.ROUTE)
    assert second.version != first.version
    whole = res.build_route_configuration()
    whole.virtual_hosts = [res.build_virtual_host(lobby.service, lobby.pods, moved)]
    assert second.resources["stateful-route"].proto == bytes(whole)


def test_a_snapshot_whose_clusters_lack_endpoints_is_refused() -> None:
    cluster = render(
        res.CLUSTER,
        "a/b",
        res.build_cluster(
            service_state("a", "b", [1]).service, res.config_source(res.SourceKind.ADS)
        ),
    )
    with pytest.raises(InconsistentSnapshot):
        _check_consistent(
            {res.CLUSTER: {"a/b": cluster}, res.ENDPOINT: {}, res.LISTENER: {}, res.ROUTE: {}},
            [],
        )


def test_a_service_with_extra_domains_answers_to_them() -> None:
    lobby = service_state("games", "lobby", [9000], domains=["*"])
    cache = cache_with(lobby)
    config = json.loads(cache.snapshot(ADS).type(res.ROUTE).resources["stateful-route"].json)
    assert config["virtualHosts"][0]["domains"] == ["lobby.games", "lobby.games:*", "*"]


def test_two_services_claiming_one_domain_make_no_snapshot() -> None:
    with pytest.raises(InconsistentSnapshot, match="both claim"):
        cache_with(
            service_state("games", "lobby", [9000], domains=["*"]),
            service_state("games", "chat", [9001], domains=["*"]),
        ).snapshot(ADS)


def test_the_route_version_names_the_routes_not_the_order_they_arrived_in() -> None:
    lobby = service_state("games", "lobby", [9000, 9001])
    forward = {f"u{i}": i % 2 for i in range(50)}
    backward = dict(reversed(list(forward.items())))
    versions = []
    for routes in (forward, backward):
        cache = cache_with(ServiceState(lobby.service, lobby.pods, routes=routes))
        versions.append(cache.snapshot(ADS).type(res.ROUTE).version)
    assert versions[0] == versions[1]
    moved = cache_with(ServiceState(lobby.service, lobby.pods, routes={**forward, "u0": 1}))
    assert moved.snapshot(ADS).type(res.ROUTE).version != versions[0]
