"""Versioned snapshots of every resource type, one per node group and config-source kind.

Rendering is the expensive part (milliseconds per resource), so the cache keeps each service's
rendered Cluster and ClusterLoadAssignment together with the inputs they came from, and renders
again only what an update changed. A snapshot's type keeps its object (and every response body
cached on it) for as long as its version holds.

Users are not services: each node group's scopes live in ``user_scopes``, which a user's
arrival or move changes in place (O(1)) with no rebuild; only a new placement (a set of pods
no user named before) adds a RouteConfiguration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from envoy_data_plane.envoy.config.core.v3 import ConfigSource

from controlplane.balancer import endpoint_weights
from controlplane.domain import PodState, Service, ServiceKey, ServiceState
from controlplane.errors import StatefulRouteError
from controlplane.xds import resources as res
from controlplane.xds import wire
from controlplane.xds.barrier import ChangeBarrier
from controlplane.xds.config import NodeGroupSettings, XdsSettings
from controlplane.xds.naming import (
    LISTENER_NAME,
    MISS_PATH_CLUSTER,
    cluster_name,
)
from controlplane.xds.render import Rendered, digest, render, render_with_json
from controlplane.xds.route_configs import RouteConfigs
from controlplane.xds.user_scopes import ScopeSnapshot, UserScopes, rest_body


class InconsistentSnapshot(StatefulRouteError):
    """A snapshot would make Envoy reference a resource it cannot get."""


@dataclass(frozen=True, slots=True)
class SnapshotKey:
    group: str
    kind: res.SourceKind


class View:
    """The resources one request names, with the response bodies built from them (once)."""

    __slots__ = ("_rest", "_sotw", "resources", "version")

    def __init__(self, version: str, resources: tuple[Rendered, ...]) -> None:
        self.version = version
        self.resources = resources
        self._rest: bytes | None = None
        self._sotw: bytes | None = None

    def rest_body(self, type_url: str) -> bytes:
        """The REST DiscoveryResponse as JSON."""
        if self._rest is None:
            self._rest = rest_body(self.version, type_url, (r.json for r in self.resources))
        return self._rest

    def sotw_resources(self, type_url: str) -> bytes:
        """DiscoveryResponse.resources, encoded; the caller adds version and nonce."""
        if self._sotw is None:
            self._sotw = wire.sotw_resources(type_url, (r.proto for r in self.resources))
        return self._sotw


@dataclass(slots=True)
class TypeSnapshot:
    """Every resource of one type, at one version."""

    type_url: str
    version: str
    resources: dict[str, Rendered]
    _views: dict[tuple[str, ...], View] = field(default_factory=dict)
    versions: dict[str, str] = field(init=False)
    # Never changes: a delta stream synced to this object needs nothing until it is replaced.
    revision = 0

    def __post_init__(self) -> None:
        self.versions = {name: r.version for name, r in self.resources.items()}

    def view(self, names: tuple[str, ...]) -> View:
        """The resources named (sorted, deduplicated; () for all) and their joint version."""
        found = self._views.get(names)
        if found is None:
            found = self._views[names] = self._make_view(names)
        return found

    def changed_since(self, revision: int) -> set[str] | None:
        return set()

    def proto(self, name: str) -> bytes:
        return self.resources[name].proto

    def _make_view(self, names: tuple[str, ...]) -> View:
        if not names:
            return View(self.version, tuple(self.resources.values()))
        chosen = tuple(r for n in names if (r := self.resources.get(n)) is not None)
        if len(names) == 1:
            return View(chosen[0].version if chosen else "absent", chosen)
        return View(_joint_version(names, self.resources), chosen)


@dataclass(frozen=True, slots=True)
class Snapshot:
    key: SnapshotKey
    types: Mapping[str, TypeSnapshot | ScopeSnapshot]

    def type(self, type_url: str) -> TypeSnapshot | ScopeSnapshot:
        return self.types[type_url]


@dataclass(slots=True)
class _Parts:
    """One service's rendered resources and the inputs they were rendered from."""

    state: ServiceState
    endpoints_input: tuple[tuple[int, str | None, int, int, PodState], ...] | None = None
    endpoints: Rendered | None = None
    clusters: dict[res.SourceKind, tuple[Service, Rendered]] = field(default_factory=dict)


class SnapshotCache:
    """Snapshots per (node group, source kind), rebuilt incrementally as services change."""

    def __init__(
        self,
        settings: XdsSettings,
        user_routes: Callable[[ServiceKey], Mapping[str, int]] = lambda _: {},
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock  # the pods' health times' clock (a hang's fence)
        self.users = UserScopes(user_routes)
        self._rest = res.RestSource(
            settings.rest_xds_cluster,
            settings.rest_refresh_delay_s,
            settings.rest_request_timeout_s,
        )
        self._sources = {kind: res.config_source(kind, self._rest) for kind in res.SourceKind}
        self._parts: dict[ServiceKey, _Parts] = {}
        self._listeners: dict[
            tuple[str, NodeGroupSettings, res.SourceKind, tuple[str, ...]], Rendered
        ] = {}
        self._miss_path: Rendered | None = None
        self._snapshots: dict[SnapshotKey, Snapshot] = {}
        self._route_configs = RouteConfigs()
        self._watchers: set[Callable[[], None]] = set()
        # Called on each staged user: flushes them (the xDS server paces it: each push costs
        # every Envoy a copy of its scope index; alone, the cache flushes at once).
        self.scopes_changed: Callable[[], None] = self.flush_scopes
        # Service changes told (``service_told``) and applied (``caught_up``): users' scopes
        # wait for every change told before them, so a route a change alters (a pod's epoch)
        # reaches Envoy no later than the scopes that name it.
        self.changes = ChangeBarrier()
        self.closed = False
        self.generation = 0
        # Where Envoy reaches the miss path (the control plane's HTTP listener); set before the
        # first snapshot is built.
        self.miss_path: tuple[str, int] = ("127.0.0.1", 0)

    # -- feeding it --------------------------------------------------------------------------

    def replace_all(self, states: Iterable[ServiceState]) -> None:
        fresh = {s.service.key: s for s in states}
        changes: dict[ServiceKey, ServiceState | None] = dict.fromkeys(self._parts)
        changes.update(fresh)
        self.update(changes)

    def update(self, changes: Mapping[ServiceKey, ServiceState | None]) -> None:
        """Apply changed services (None: removed) and publish the snapshots that changed."""
        if any(self._loses_a_label(key, state) for key, state in changes.items()):
            # The users moved off a failed pod travel with the endpoint change that takes its
            # label away, not a paced push later (meanwhile their requests go where Envoy picks).
            self.flush_scopes()
        for key, state in changes.items():
            if state is None:
                self._parts.pop(key, None)
            elif key in self._parts:
                self._parts[key].state = state
            else:
                self._parts[key] = _Parts(state)
        changed = False
        for snapshot_key, old in list(self._snapshots.items()):
            new = self._build(snapshot_key, old, changes.keys())
            if new is not old:
                self._snapshots[snapshot_key] = new
                changed = True
        if changed:
            self.publish()

    def _loses_a_label(self, key: ServiceKey, state: ServiceState | None) -> bool:
        old = self._parts.get(key)
        if old is None or state is None:
            return False
        labelled = {p.index for p in state.pods if p.keeps_bound_users}
        return any(p.keeps_bound_users and p.index not in labelled for p in old.state.pods)

    def user_changed(self, service: ServiceKey, uid: str) -> None:
        """A user's pod in ``service`` changed (or it left Envoy's routes). Its scope follows at
        the next ``flush_scopes``, which ``scopes_changed`` schedules: Envoys see users' scope
        changes only in those batches, whatever wakes their streams in between."""
        self.users.stage(service, uid)
        if self.users.leaving(service, uid, self._labelled):
            # Off a pod that lost its label: Envoy's balancer picks for the user until its
            # scope moves, so that goes now, not at the next paced push.
            self.flush_scopes()
        else:
            self.scopes_changed()

    def _labelled(self, cluster: str, index: int) -> bool:
        """Whether the pod's endpoint carries its subset label in the snapshots now."""
        namespace, _, name = cluster.partition("/")
        parts = self._parts.get(ServiceKey(namespace, name))
        pods = parts.state.pods if parts else ()
        return any(p.index == index and p.keeps_bound_users for p in pods)

    def service_told(self, key: ServiceKey) -> int:
        """A change of ``key`` is on its way (applied later with ``update``); returns how many
        changes scopes must wait for so far, which ``caught_up`` is given once they are
        applied. Only a service with an epoch header (or one not known yet) makes them wait."""
        parts = self._parts.get(key)
        if parts is None or parts.state.service.settings.failover.epoch_header is not None:
            return self.changes.tell()
        return self.changes.told

    def caught_up(self, told: int) -> None:
        """The first ``told`` service changes are applied: flush the scopes that waited."""
        if self.changes.applied(told):
            self._flush_scopes_now()

    def flush_scopes(self) -> None:
        """Re-point the staged users' scopes in every group that serves them; publish. While a
        service change told earlier is not applied, they wait for it (``caught_up``)."""
        if not self.changes.hold():
            self._flush_scopes_now()

    def _flush_scopes_now(self) -> None:
        changed, regrouped = self.users.flush()
        for name in regrouped:
            self._refresh_routes(name)
        if changed:
            self.publish()

    def placement_scope(self, group: str, service: ServiceKey, uid: str) -> tuple[str, int] | None:
        """The key of a scope that routes ``uid`` in ``service`` as it is placed now, and the
        revision of the group's scopes an Envoy must hold to have it; None if no Envoy of the
        group asked for anything yet.

        That is the scope of the user's placement, there since its first user came: a new
        user's first request needs no push of its own scope.
        """
        found = self.users.placement_of(group, service, uid)
        if found is None:
            return None
        placement, own_key = found
        if not placement:  # not in the sticky table (any more): its own key, however it is
            return own_key, self.users.revision(group)
        scope = self.users.placement_scope(group, placement)
        if scope is None:
            self._flush_scopes_now()  # a placement's first user: its scope goes out now
            scope = self.users.placement_scope(group, placement)
        return scope

    # -- reading it --------------------------------------------------------------------------

    def snapshot(self, key: SnapshotKey) -> Snapshot:
        """The current snapshot for a group; built on first use, then kept up to date."""
        found = self._snapshots.get(key)
        if found is None:
            found = self._snapshots[key] = self._build(key, None, self._parts.keys())
        return found

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after every published change (and on close); returns unwatch."""
        self._watchers.add(callback)
        return lambda: self._watchers.discard(callback)

    def close(self) -> None:
        """Wake every watcher one last time so held requests and streams can end."""
        self.closed = True
        self.publish()

    def publish(self) -> None:
        """Wake every watcher: the snapshots (or a group's scopes) changed."""
        self.generation += 1
        for callback in list(self._watchers):
            callback()

    def _refresh_routes(self, group: str) -> None:
        """New placements in a group: its snapshots get their RouteConfigurations."""
        for key, snapshot in list(self._snapshots.items()):
            if key.group == group:
                types = dict(snapshot.types)
                types[res.ROUTE] = self._routes(group, snapshot.types[res.ROUTE])
                self._snapshots[key] = Snapshot(key, types)

    # -- building ----------------------------------------------------------------------------

    def _build(
        self, key: SnapshotKey, old: Snapshot | None, changed: Collection[ServiceKey]
    ) -> Snapshot:
        """``old`` with the services in ``changed`` rendered again (all of them if no ``old``)."""
        group = self.settings.group(key.group)
        changed = [k for k in changed if _in_group(k, group)]
        if old is not None and not changed:
            return old
        clusters = dict(old.types[res.CLUSTER].resources) if old else {}  # type: ignore[union-attr]
        endpoints = dict(old.types[res.ENDPOINT].resources) if old else {}  # type: ignore[union-attr]
        source = self._sources[key.kind]
        for service in changed:
            name = cluster_name(service)
            parts = self._parts.get(service)
            if parts is None:
                for items in (clusters, endpoints):
                    items.pop(name, None)
            else:
                clusters[name] = self._cluster(parts, key.kind, source)
                endpoints[name] = self._endpoints(parts)
        services = [p.state.service for k, p in self._parts.items() if _in_group(k, group)]
        users = self.users.group(key.group, services)
        clusters[MISS_PATH_CLUSTER] = self._miss_path_cluster()
        listener = self._listener(key.group, group, key.kind, source, users.table.uid_headers)
        fresh = {
            res.CLUSTER: dict(sorted(clusters.items())),
            res.ENDPOINT: dict(sorted(endpoints.items())),
            res.LISTENER: {LISTENER_NAME: listener},
        }
        _check_consistent(fresh, services)
        types: dict[str, TypeSnapshot | ScopeSnapshot] = {}
        for type_url, items in fresh.items():
            version = _joint_version(tuple(items), items)
            previous = old.types[type_url] if old else None
            if isinstance(previous, TypeSnapshot) and previous.version == version:
                types[type_url] = previous
            else:
                types[type_url] = TypeSnapshot(type_url, version, items)
        types[res.SCOPED] = users.snapshot
        types[res.ROUTE] = self._routes(key.group, old.types[res.ROUTE] if old else None)
        if old is not None and all(types[t] is old.types[t] for t in types):
            return old
        return Snapshot(key, types)

    def _routes(
        self, group: str, old: TypeSnapshot | ScopeSnapshot | None
    ) -> TypeSnapshot | ScopeSnapshot:
        """The group's RouteConfigurations: the balanced one and one per placement in use."""
        services = {
            cluster_name(k): p.state.service
            for k, p in self._parts.items()
            if _in_group(k, self.settings.group(group))
        }
        epochs = {
            (cluster_name(k), pod.index): pod.epoch
            for k, p in self._parts.items()
            if p.state.service.settings.failover.epoch_header is not None
            for pod in p.state.pods
        }
        now = self._clock()
        # Not with an epoch header: a moved user's new pod must send the raised epoch, which
        # reaches Envoy with the service change its users' scopes wait for (``changes``).
        gone = {
            (cluster_name(k), pod.index)
            for k, p in self._parts.items()
            if p.state.service.settings.failover.epoch_header is None
            for pod in p.state.pods
            if not pod.holds_users(now)
        }
        placements = self.users.placements(group)
        items = self._route_configs.for_group(group, services, placements, epochs, gone)
        version = _joint_version(tuple(sorted(items)), items)
        if old is not None and old.version == version:
            return old
        return TypeSnapshot(res.ROUTE, version, dict(sorted(items.items())))

    def _miss_path_cluster(self) -> Rendered:
        if self._miss_path is None:
            cluster = res.build_miss_path_cluster(
                *self.miss_path, tls=self.settings.tls is not None
            )
            self._miss_path = render(res.CLUSTER, MISS_PATH_CLUSTER, cluster)
        return self._miss_path

    def _cluster(self, parts: _Parts, kind: res.SourceKind, source: ConfigSource) -> Rendered:
        service = parts.state.service
        cached = parts.clusters.get(kind)
        if cached is None or cached[0] != service:
            cluster = res.build_cluster(service, source, self.settings.health_event_log_path)
            cached = parts.clusters[kind] = (service, render(res.CLUSTER, cluster.name, cluster))
        return cached[1]

    def _endpoints(self, parts: _Parts) -> Rendered:
        pods = parts.state.pods
        weights = endpoint_weights(pods)
        fingerprint = tuple((p.index, p.host, p.port, weights[p.index], p.state) for p in pods)
        if parts.endpoints is None or parts.endpoints_input != fingerprint:
            key = parts.state.service.key
            assignment = res.build_load_assignment(key, pods, weights)
            as_json = res.load_assignment_json(key, pods, weights)
            parts.endpoints = render_with_json(res.ENDPOINT, cluster_name(key), assignment, as_json)
            parts.endpoints_input = fingerprint
        return parts.endpoints

    def _listener(
        self,
        name: str,
        group: NodeGroupSettings,
        kind: res.SourceKind,
        source: ConfigSource,
        uid_headers: tuple[str, ...],
    ) -> Rendered:
        found = self._listeners.get((name, group, kind, uid_headers))
        if found is None:
            listener = res.build_listener(
                group.listener_address, group.listener_port, source, uid_headers, name
            )
            found = render(res.LISTENER, LISTENER_NAME, listener)
            self._listeners[(name, group, kind, uid_headers)] = found
        return found


def _in_group(key: ServiceKey, group: NodeGroupSettings) -> bool:
    return group.namespaces is None or key.namespace in group.namespaces


def _check_consistent(
    types: Mapping[str, Mapping[str, Rendered]], services: Iterable[Service]
) -> None:
    # EDS Cluster -> ClusterLoadAssignment by name (the miss path's cluster carries its
    # endpoint inline).
    if set(types[res.CLUSTER]) - {MISS_PATH_CLUSTER} != set(types[res.ENDPOINT]):
        raise InconsistentSnapshot("clusters and load assignments differ")
    claimed: dict[str, ServiceKey] = {}
    for service in services:
        for domain in service.settings.domains:
            if claimed.setdefault(domain, service.key) != service.key:
                # Envoy would reject every RouteConfiguration holding both.
                raise InconsistentSnapshot(
                    f"{service.key} and {claimed[domain]} both claim the domain {domain!r}"
                )


def _joint_version(names: tuple[str, ...], resources: Mapping[str, Rendered]) -> str:
    """One version for several resources: a digest of their names and versions."""
    parts = (f"{n}={r.version if (r := resources.get(n)) else '-'}" for n in names)
    return digest("\n".join(parts).encode())
