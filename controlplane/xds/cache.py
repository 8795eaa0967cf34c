"""Versioned snapshots of every resource type, one per node group and config-source kind.

Rendering is the expensive part (milliseconds per resource), so the cache keeps each service's
rendered Cluster, ClusterLoadAssignment and virtual host together with the inputs they came
from, and renders again only what an update changed. A snapshot's type keeps its object (and
every response body cached on it) for as long as its version holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from envoy_data_plane.envoy.config.core.v3 import ConfigSource

from controlplane.balancer import endpoint_weights
from controlplane.domain import PodState, Service, ServiceKey, ServiceState
from controlplane.errors import StatefulRouteError
from controlplane.xds import resources as res
from controlplane.xds import wire
from controlplane.xds.config import NodeGroupSettings, XdsSettings
from controlplane.xds.naming import (
    LISTENER_NAME,
    MISS_PATH_CLUSTER,
    ROUTE_CONFIG_NAME,
    cluster_name,
)
from controlplane.xds.render import (
    Fragment,
    Rendered,
    digest,
    render,
    render_composite,
    render_with_json,
)
from controlplane.xds.sticky_host import StickyHost

log = logging.getLogger(__name__)

# RouteConfiguration.virtual_hosts is field 2.
_VIRTUAL_HOSTS_FIELD = 2


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
            items = ",".join(r.json for r in self.resources)
            self._rest = (
                f'{{"version_info":"{self.version}","type_url":"{type_url}","resources":[{items}]}}'
            ).encode()
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

    def __post_init__(self) -> None:
        self.versions = {name: r.version for name, r in self.resources.items()}

    def view(self, names: tuple[str, ...]) -> View:
        """The resources named (sorted, deduplicated; () for all) and their joint version."""
        found = self._views.get(names)
        if found is None:
            found = self._views[names] = self._make_view(names)
        return found

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
    types: Mapping[str, TypeSnapshot]
    # The virtual hosts the RouteConfiguration was assembled from, by cluster name.
    hosts: Mapping[str, Fragment]

    def type(self, type_url: str) -> TypeSnapshot:
        return self.types[type_url]


@dataclass(slots=True)
class _Parts:
    """One service's rendered resources and the inputs they were rendered from."""

    state: ServiceState
    endpoints_input: tuple[tuple[int, str, int, int, PodState], ...] | None = None
    endpoints: Rendered | None = None
    host_input: tuple[tuple[int, ...], Mapping[str, int]] | None = None
    host: Fragment | None = None
    sticky: StickyHost | None = None
    clusters: dict[res.SourceKind, tuple[Service, Rendered]] = field(default_factory=dict)


class SnapshotCache:
    """Snapshots per (node group, source kind), rebuilt incrementally as services change."""

    def __init__(self, settings: XdsSettings) -> None:
        self.settings = settings
        self._rest = res.RestSource(
            settings.rest_xds_cluster,
            settings.rest_refresh_delay_s,
            settings.rest_request_timeout_s,
        )
        self._sources = {kind: res.config_source(kind, self._rest) for kind in res.SourceKind}
        self._route_head = Fragment(res.build_route_configuration())
        self._parts: dict[ServiceKey, _Parts] = {}
        self._listeners: dict[
            tuple[NodeGroupSettings, res.SourceKind, frozenset[str]], Rendered
        ] = {}
        self._miss_path: Rendered | None = None
        self._snapshots: dict[SnapshotKey, Snapshot] = {}
        self._watchers: set[Callable[[], None]] = set()
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
            self._publish()

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
        self._publish()

    def _publish(self) -> None:
        self.generation += 1
        for callback in list(self._watchers):
            callback()

    # -- building ----------------------------------------------------------------------------

    def _build(
        self, key: SnapshotKey, old: Snapshot | None, changed: Collection[ServiceKey]
    ) -> Snapshot:
        """``old`` with the services in ``changed`` rendered again (all of them if no ``old``)."""
        group = self.settings.group(key.group)
        changed = [k for k in changed if _in_group(k, group)]
        if old is not None and not changed:
            return old
        clusters = dict(old.types[res.CLUSTER].resources) if old else {}
        endpoints = dict(old.types[res.ENDPOINT].resources) if old else {}
        hosts = dict(old.hosts) if old else {}
        source = self._sources[key.kind]
        for service in changed:
            name = cluster_name(service)
            parts = self._parts.get(service)
            if parts is None:
                for items in (clusters, endpoints, hosts):
                    items.pop(name, None)
            else:
                clusters[name] = self._cluster(parts, key.kind, source)
                endpoints[name] = self._endpoints(parts)
                hosts[name] = self._host(parts)
        hosts = dict(sorted(hosts.items()))
        services = [p.state.service for k, p in self._parts.items() if _in_group(k, group)]
        uid_headers = frozenset(service.settings.uid_header for service in services)
        clusters[MISS_PATH_CLUSTER] = self._miss_path_cluster()
        fresh = {
            res.CLUSTER: dict(sorted(clusters.items())),
            res.ENDPOINT: dict(sorted(endpoints.items())),
            res.LISTENER: {LISTENER_NAME: self._listener(group, key.kind, source, uid_headers)},
            res.ROUTE: {ROUTE_CONFIG_NAME: self._routes(old, hosts)},
        }
        _check_consistent(fresh, services)
        types: dict[str, TypeSnapshot] = {}
        for type_url, items in fresh.items():
            version = _joint_version(tuple(items), items)
            previous = old.types[type_url] if old else None
            if previous is not None and previous.version == version:
                types[type_url] = previous
            else:
                types[type_url] = TypeSnapshot(type_url, version, items)
        if old is not None and all(types[t] is old.types[t] for t in types):
            return old
        return Snapshot(key, types, hosts)

    def _routes(self, old: Snapshot | None, hosts: Mapping[str, Fragment]) -> Rendered:
        """The RouteConfiguration: the old one while its virtual hosts are the same objects."""
        if (
            old is not None
            and len(old.hosts) == len(hosts)
            and all(old.hosts.get(name) is host for name, host in hosts.items())
        ):
            return old.types[res.ROUTE].resources[ROUTE_CONFIG_NAME]
        return render_composite(
            res.ROUTE,
            ROUTE_CONFIG_NAME,
            self._route_head,
            _VIRTUAL_HOSTS_FIELD,
            "virtualHosts",
            list(hosts.values()),
        )

    def _miss_path_cluster(self) -> Rendered:
        if self._miss_path is None:
            cluster = res.build_miss_path_cluster(*self.miss_path)
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

    def _host(self, parts: _Parts) -> Fragment:
        state = parts.state
        if parts.sticky is None or parts.sticky.service != state.service:
            parts.sticky, parts.host = StickyHost(state.service), None
        fingerprint = (tuple(p.index for p in state.pods), state.routes)
        if parts.host is None or parts.host_input != fingerprint:
            parts.host = parts.sticky.render(state.pods, state.routes)
            parts.host_input = fingerprint
        return parts.host

    def _listener(
        self,
        group: NodeGroupSettings,
        kind: res.SourceKind,
        source: ConfigSource,
        uid_headers: frozenset[str],
    ) -> Rendered:
        found = self._listeners.get((group, kind, uid_headers))
        if found is None:
            listener = res.build_listener(
                group.listener_address, group.listener_port, source, uid_headers
            )
            found = render(res.LISTENER, LISTENER_NAME, listener)
            self._listeners[(group, kind, uid_headers)] = found
        return found


def _in_group(key: ServiceKey, group: NodeGroupSettings) -> bool:
    return group.namespaces is None or key.namespace in group.namespaces


def _check_consistent(
    types: Mapping[str, Mapping[str, Rendered]], services: Iterable[Service]
) -> None:
    # Listener -> RouteConfiguration by name; EDS Cluster -> ClusterLoadAssignment by name (the
    # miss path's cluster carries its endpoint inline).
    if set(types[res.CLUSTER]) - {MISS_PATH_CLUSTER} != set(types[res.ENDPOINT]):
        raise InconsistentSnapshot("clusters and load assignments differ")
    if types[res.LISTENER] and ROUTE_CONFIG_NAME not in types[res.ROUTE]:
        raise InconsistentSnapshot("the listener names a route configuration that is missing")
    claimed: dict[str, ServiceKey] = {}
    for service in services:
        for domain in service.settings.domains:
            if claimed.setdefault(domain, service.key) != service.key:
                # Envoy would reject the whole route configuration.
                raise InconsistentSnapshot(
                    f"{service.key} and {claimed[domain]} both claim the domain {domain!r}"
                )


def _joint_version(names: tuple[str, ...], resources: Mapping[str, Rendered]) -> str:
    """One version for several resources: a digest of their names and versions."""
    parts = (f"{n}={r.version if (r := resources.get(n)) else '-'}" for n in names)
    return digest("\n".join(parts).encode())
