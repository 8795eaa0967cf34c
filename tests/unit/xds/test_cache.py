"""Snapshots: built from state, versioned by content, rebuilt only where a service changed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from envoy_data_plane.envoy.config.route.v3 import (
    ScopedRouteConfiguration,
    ScopedRouteConfigurationKey,
    ScopedRouteConfigurationKeyFragment,
)

from controlplane.domain import PodHealth, PodState, ServiceKey, ServiceState
from controlplane.domain.sticky import StickyTable
from controlplane.xds import resources as res
from controlplane.xds.cache import (
    InconsistentSnapshot,
    SnapshotCache,
    SnapshotKey,
    _check_consistent,
)
from controlplane.xds.config import XdsSettings
from controlplane.xds.naming import BALANCED_ROUTE_NAME, MISS_PATH_CLUSTER
from controlplane.xds.render import render
from controlplane.xds.scopes import FALLBACK_KEY, ScopeTable
from tests.support.state import service_state

ADS = SnapshotKey("default", res.SourceKind.ADS)
REST = SnapshotKey("default", res.SourceKind.REST)
LOBBY = ServiceKey("games", "lobby")
EPOCH_HEADER = "x-stateful-route-epoch"


def cache_with(*states: ServiceState, **settings: object) -> SnapshotCache:
    return users_cache(*states, clock=time.time, **settings)[0]


def users_cache(
    *states: ServiceState, clock: Callable[[], float] = time.time, **settings: object
) -> tuple[SnapshotCache, StickyTable]:
    """A cache following a sticky table, as the xDS server wires them."""
    sticky = StickyTable(window_s=3600)
    cache = SnapshotCache(XdsSettings.model_validate(settings), sticky.routes, clock)
    sticky.observer = cache.user_changed
    cache.replace_all(states)
    return cache, sticky


def with_pod(state: ServiceState, index: int, **changes: object) -> ServiceState:
    pods = tuple(p.model_copy(update=changes) if p.index == index else p for p in state.pods)
    return ServiceState(state.service, pods)


def scopes(cache: SnapshotCache, key: SnapshotKey = ADS) -> dict[str, str]:
    return dict(cache.snapshot(key).type(res.SCOPED).versions)


def routes(cache: SnapshotCache, key: SnapshotKey = ADS) -> list[str]:
    return list(cache.snapshot(key).type(res.ROUTE).versions)


def test_a_snapshot_holds_every_type_for_every_service() -> None:
    cache = cache_with(service_state("games", "lobby", [9000, 9001]), service_state("a", "b", [1]))
    snapshot = cache.snapshot(ADS)
    assert list(snapshot.type(res.CLUSTER).resources) == [
        "a/b",
        "games/lobby",
        MISS_PATH_CLUSTER,
    ]
    assert list(snapshot.type(res.ENDPOINT).resources) == ["a/b", "games/lobby"]
    assert list(snapshot.type(res.LISTENER).versions) == ["stateful-route"]
    assert routes(cache) == [BALANCED_ROUTE_NAME]
    # No user yet: a request with no uid, and the miss path's fallback, are balanced.
    assert scopes(cache) == {"u": BALANCED_ROUTE_NAME, FALLBACK_KEY: BALANCED_ROUTE_NAME}


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


def test_a_users_arrival_adds_one_scope_naming_its_pods_routes_in_every_kind() -> None:
    cache, sticky = users_cache(service_state("games", "lobby", [9000, 9001]))
    before = {key: cache.snapshot(key) for key in (ADS, REST)}
    generation = cache.generation
    sticky.put(LOBBY, "bob", 1, seen=0)
    assert cache.generation == generation + 1  # published at once, no rebuild
    for key in (ADS, REST):
        assert scopes(cache, key)["ubob"] == "stateful-route:games/lobby=1"
        # The placement's own scope, which the miss path selects for a new user's first request.
        assert scopes(cache, key)["=stateful-route:games/lobby=1"] == "stateful-route:games/lobby=1"
        assert routes(cache, key) == [BALANCED_ROUTE_NAME, "stateful-route:games/lobby=1"]
        assert cache.snapshot(key).type(res.CLUSTER) is before[key].type(res.CLUSTER)


def test_users_of_one_pod_share_its_route_configuration() -> None:
    cache, sticky = users_cache(service_state("games", "lobby", [9000, 9001]))
    sticky.put(LOBBY, "bob", 1, seen=0)
    shared = cache.snapshot(ADS).type(res.ROUTE)
    sticky.put(LOBBY, "carol", 1, seen=0)
    assert cache.snapshot(ADS).type(res.ROUTE) is shared
    assert scopes(cache)["ucarol"] == scopes(cache)["ubob"]


def test_a_moved_user_is_one_scope_re_pointed_and_a_gone_one_loses_its_scope() -> None:
    cache, sticky = users_cache(service_state("games", "lobby", [9000, 9001]))
    sticky.put(LOBBY, "bob", 1, seen=0)
    sticky.put(LOBBY, "carol", 1, seen=0)
    scope_type = cache.snapshot(ADS).type(res.SCOPED)
    revision = scope_type.revision
    sticky.move(LOBBY, ["bob"], 0)
    # Bob's scope, and pod 0's placement scope (its first user).
    assert scope_type.changed_since(revision) == {"ubob", "=stateful-route:games/lobby=0"}
    assert scopes(cache)["ubob"] == "stateful-route:games/lobby=0"
    sticky.remove(LOBBY, "carol")
    assert "ucarol" not in scopes(cache)
    assert "=stateful-route:games/lobby=1" not in scopes(cache)
    # Nobody is on pod 1 any more: its route configuration goes too.
    assert routes(cache) == [BALANCED_ROUTE_NAME, "stateful-route:games/lobby=0"]


def test_a_user_of_two_services_has_one_scope_naming_both_pods() -> None:
    chat = ServiceKey("games", "chat")
    cache, sticky = users_cache(
        service_state("games", "lobby", [9000, 9001]), service_state("games", "chat", [9100])
    )
    sticky.put(LOBBY, "bob", 1, seen=0)
    sticky.put(chat, "bob", 0, seen=0)
    assert scopes(cache)["ubob"] == "stateful-route:games/chat=0;games/lobby=1"


def test_services_with_their_own_uid_headers_key_their_users_apart() -> None:
    cache, sticky = users_cache(
        service_state("games", "lobby", [9000]),
        service_state("games", "chat", [9100], uid_header="x-player"),
    )
    sticky.put(ServiceKey("games", "chat"), "bob", 0, seen=0)
    sticky.put(LOBBY, "bob", 0, seen=0)
    # Keys: "u", then the x-player value, a space, the x-uid value (headers sorted by name).
    assert scopes(cache)["ubob "] == "stateful-route:games/chat=0"
    assert scopes(cache)["u bob"] == "stateful-route:games/lobby=0"
    assert scopes(cache)["u "] == BALANCED_ROUTE_NAME


def test_users_already_routed_get_their_scopes_when_an_envoy_first_asks() -> None:
    cache, sticky = users_cache(service_state("games", "lobby", [9000, 9001]))
    sticky.put(LOBBY, "bob", 1, seen=0)  # before any snapshot: no group exists yet
    assert scopes(cache)["ubob"] == "stateful-route:games/lobby=1"


def test_a_scope_encoded_by_hand_equals_the_message() -> None:
    cache, sticky = users_cache(service_state("games", "lobby", [9000]))
    sticky.put(LOBBY, 'a"b\\c', 0, seen=0)
    scope_type = cache.snapshot(REST).type(res.SCOPED)
    key = 'ua"b\\c'
    message = ScopedRouteConfiguration(
        name=key,
        route_configuration_name="stateful-route:games/lobby=0",
        key=ScopedRouteConfigurationKey(
            fragments=[ScopedRouteConfigurationKeyFragment(string_key=key)]
        ),
    )
    assert scope_type.proto(key) == bytes(message)
    body = json.loads(scope_type.view(()).rest_body(res.SCOPED))
    [as_json] = [r for r in body["resources"] if r["name"] == key]
    assert as_json == {"@type": res.SCOPED, **message.to_dict()}


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


def test_a_snapshot_whose_clusters_lack_endpoints_is_refused() -> None:
    cluster = render(
        res.CLUSTER,
        "a/b",
        res.build_cluster(
            service_state("a", "b", [1]).service, res.config_source(res.SourceKind.ADS)
        ),
    )
    with pytest.raises(InconsistentSnapshot):
        _check_consistent({res.CLUSTER: {"a/b": cluster}, res.ENDPOINT: {}, res.LISTENER: {}}, [])


def test_a_service_with_extra_domains_answers_to_them() -> None:
    lobby = service_state("games", "lobby", [9000], domains=["*"])
    cache = cache_with(lobby)
    balanced = cache.snapshot(ADS).type(res.ROUTE).resources[BALANCED_ROUTE_NAME]  # type: ignore[union-attr]
    config = json.loads(balanced.json)
    assert config["virtualHosts"][0]["domains"] == ["lobby.games", "lobby.games:*", "*"]


def test_two_services_claiming_one_domain_make_no_snapshot() -> None:
    with pytest.raises(InconsistentSnapshot, match="both claim"):
        cache_with(
            service_state("games", "lobby", [9000], domains=["*"]),
            service_state("games", "chat", [9001], domains=["*"]),
        ).snapshot(ADS)


def test_the_scope_version_names_the_users_not_the_order_they_arrived_in() -> None:
    users = [(f"u{i}", i % 2) for i in range(50)]
    versions = []
    for order in (users, users[::-1]):
        table = ScopeTable(["x-uid"], epoch="e")
        for uid, pod in order:
            table.point(uid, (("games/lobby", pod),))
        versions.append(table.version.rsplit(".", 1)[1])
    assert versions[0] == versions[1]


def test_users_moved_off_a_failed_pod_go_out_with_the_endpoint_change() -> None:
    lobby = service_state("games", "lobby", [9000, 9001])
    cache, sticky = users_cache(lobby)
    scopes(cache)  # an Envoy connected
    cache.scopes_changed = lambda: None  # paced: nothing goes out by itself
    sticky.put(LOBBY, "bob", 1, seen=0)
    cache.flush_scopes()
    sticky.move(LOBBY, ["bob"], 0)
    assert scopes(cache)["ubob"] == "stateful-route:games/lobby=1"  # staged for the next push
    cache.update({LOBBY: with_pod(lobby, 1, health=PodHealth(state=PodState.DOWN))})
    assert scopes(cache)["ubob"] == "stateful-route:games/lobby=0"


def test_a_pods_weight_change_leaves_staged_scopes_to_their_push() -> None:
    lobby = service_state("games", "lobby", [9000, 9001])
    cache, sticky = users_cache(lobby)
    scopes(cache)
    cache.scopes_changed = lambda: None
    sticky.put(LOBBY, "bob", 1, seen=0)
    cache.update({LOBBY: with_pod(lobby, 1, weight=3)})
    assert "ubob" not in scopes(cache)


def test_a_user_moved_off_a_pod_that_already_lost_its_label_goes_out_at_once() -> None:
    lobby = service_state("games", "lobby", [9000, 9001])
    cache, sticky = users_cache(lobby)
    scopes(cache)
    cache.scopes_changed = lambda: None  # paced: nothing goes out by itself
    sticky.put(LOBBY, "bob", 1, seen=0)
    cache.flush_scopes()
    cache.update({LOBBY: with_pod(lobby, 1, health=PodHealth(state=PodState.DOWN))})
    sticky.move(LOBBY, ["bob"], 0)  # the failover's move comes after the endpoint change
    assert scopes(cache)["ubob"] == "stateful-route:games/lobby=0"


def placement_vhost(cache: SnapshotCache, name: str) -> dict[str, object]:
    found = cache.snapshot(ADS).type(res.ROUTE).resources[name]  # type: ignore[union-attr]
    [host] = json.loads(found.json)["virtualHosts"]
    route: dict[str, object] = host["routes"][0]
    return route


def test_a_failed_pods_route_asks_where_its_users_went_but_a_fenced_pods_waits() -> None:
    lobby = service_state("games", "lobby", [9000, 9001, 9002])
    cache, sticky = users_cache(lobby, clock=lambda: 1000.0)
    sticky.put(LOBBY, "bob", 1, seen=0)
    sticky.put(LOBBY, "carol", 2, seen=0)
    dead = PodHealth(state=PodState.DOWN)
    hung = PodHealth(state=PodState.DOWN, fenced_until=1004.0)  # requests may be in flight
    cache.update({LOBBY: with_pod(with_pod(lobby, 1, health=dead), 2, health=hung)})
    assert "directResponse" in placement_vhost(cache, "stateful-route:games/lobby=1")
    assert "route" in placement_vhost(cache, "stateful-route:games/lobby=2")


def test_a_failed_pods_route_waits_for_scopes_when_the_service_sends_an_epoch() -> None:
    # The new pod's raised epoch travels with the service change the scopes wait for; the
    # miss path's answer would not wait for it.
    lobby = service_state("games", "lobby", [9000, 9001], failover={"epoch_header": EPOCH_HEADER})
    cache, sticky = users_cache(lobby)
    sticky.put(LOBBY, "bob", 1, seen=0)
    cache.update({LOBBY: with_pod(lobby, 1, health=PodHealth(state=PodState.DOWN))})
    assert "route" in placement_vhost(cache, "stateful-route:games/lobby=1")


def epoch_in_route(cache: SnapshotCache, name: str) -> str | None:
    """The epoch header's value a placement's RouteConfiguration sets, as Envoy gets it."""
    found = cache.snapshot(ADS).type(res.ROUTE).resources.get(name)  # type: ignore[union-attr]
    if found is None:
        return None
    [host] = json.loads(found.json)["virtualHosts"]
    [header] = host["requestHeadersToAdd"]
    value: str = header["header"]["value"]
    return value


def test_a_pods_new_epoch_changes_its_placement_route() -> None:
    lobby = service_state("games", "lobby", [9000, 9001], failover={"epoch_header": EPOCH_HEADER})
    cache, sticky = users_cache(lobby)
    sticky.put(LOBBY, "bob", 1, seen=0)
    before = cache.snapshot(ADS).type(res.ROUTE).versions["stateful-route:games/lobby=1"]
    assert epoch_in_route(cache, "stateful-route:games/lobby=1") == "0"
    cache.update({LOBBY: with_pod(lobby, 1, epoch=4)})
    after = cache.snapshot(ADS).type(res.ROUTE).versions["stateful-route:games/lobby=1"]
    assert epoch_in_route(cache, "stateful-route:games/lobby=1") == "4"
    assert after != before


def test_moved_users_scopes_wait_for_the_epoch_change_told_before_them() -> None:
    lobby = service_state("games", "lobby", [9000, 9001], failover={"epoch_header": EPOCH_HEADER})
    cache, sticky = users_cache(lobby)
    sticky.put(LOBBY, "carol", 0, seen=0)  # Envoy already holds pod 0's route (epoch 0)
    sticky.put(LOBBY, "bob", 1, seen=0)
    assert scopes(cache)["ubob"] == "stateful-route:games/lobby=1"  # an Envoy connected
    seen: list[tuple[str, str | None]] = []  # (bob's route, pod 0's epoch) at every publish
    cache.watch(
        lambda: seen.append(
            (scopes(cache)["ubob"], epoch_in_route(cache, "stateful-route:games/lobby=0"))
        )
    )
    # The executor raises pod 0's epoch and tells the xDS server, then moves bob there.
    told = cache.service_told(LOBBY)
    sticky.move(LOBBY, ["bob"], 0)
    cache.flush_scopes()
    assert scopes(cache)["ubob"] == "stateful-route:games/lobby=1"  # held back
    cache.update({LOBBY: with_pod(lobby, 0, epoch=5)})
    cache.caught_up(told)
    assert scopes(cache)["ubob"] == "stateful-route:games/lobby=0"
    # Never a publish where bob's scope names pod 0 with its old epoch.
    assert ("stateful-route:games/lobby=0", "0") not in seen
    assert seen[-1] == ("stateful-route:games/lobby=0", "5")


def test_changes_of_a_service_without_an_epoch_header_hold_no_scope_back() -> None:
    lobby = service_state("games", "lobby", [9000, 9001])
    cache, sticky = users_cache(lobby)
    sticky.put(LOBBY, "bob", 1, seen=0)
    scopes(cache)  # an Envoy connected
    cache.service_told(LOBBY)
    sticky.move(LOBBY, ["bob"], 0)
    assert scopes(cache)["ubob"] == "stateful-route:games/lobby=0"
