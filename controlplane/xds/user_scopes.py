"""Every node group's users as scopes: which users changed, their scope tables, and those
tables as an xDS resource type (see ``scopes`` for what a scope is).

A user's arrival or move is *staged* here and reaches the group's ``ScopeTable`` only when
``flush`` runs, which the xDS server paces: Envoy pays for each scope update in proportion to
the scopes it holds, so users' changes travel together. Each group's table changes in place
and ``ScopeSnapshot`` always reads it as it is: no snapshot is rebuilt per user.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from controlplane.domain import Service, ServiceKey
from controlplane.xds import resources as res
from controlplane.xds import wire
from controlplane.xds.naming import cluster_name
from controlplane.xds.scopes import (
    Placement,
    ScopeTable,
    encode_scope,
    placement_key,
    placement_of,
    scope_json,
    user_key,
)


def rest_body(version: str, type_url: str, items: Iterable[str]) -> bytes:
    """A REST DiscoveryResponse around resources already written as JSON objects."""
    resources = ",".join(items)
    return (
        f'{{"version_info":"{version}","type_url":"{type_url}","resources":[{resources}]}}'
    ).encode()


class ScopeView:
    """Every scope named (SotW and REST send them all on each change), encoded once."""

    __slots__ = ("_items", "_rest", "_sotw", "version")

    def __init__(self, table: ScopeTable, names: tuple[str, ...]) -> None:
        self.version = table.version
        self._items = list(table.items(names or None))
        self._rest: bytes | None = None
        self._sotw: bytes | None = None

    def rest_body(self, type_url: str) -> bytes:
        if self._rest is None:
            items = (scope_json(key, route) for key, route in self._items)
            self._rest = rest_body(self.version, type_url, items)
        return self._rest

    def sotw_resources(self, type_url: str) -> bytes:
        if self._sotw is None:
            scopes = (encode_scope(key, route) for key, route in self._items)
            self._sotw = wire.sotw_resources(type_url, scopes)
        return self._sotw


class ScopeSnapshot:
    """A group's scopes as a snapshot type: always the table's current state."""

    type_url = res.SCOPED

    def __init__(self, table: ScopeTable) -> None:
        self.table = table
        self._views: dict[tuple[str, ...], ScopeView] = {}

    @property
    def version(self) -> str:
        return self.table.version

    @property
    def revision(self) -> int:
        return self.table.revision

    @property
    def versions(self) -> Mapping[str, str]:
        # A scope's content is its key and the RouteConfiguration it names.
        return self.table.routes

    def changed_since(self, revision: int) -> set[str] | None:
        return self.table.changed_since(revision)

    def proto(self, name: str) -> bytes:
        return self.table.proto(name)

    def view(self, names: tuple[str, ...]) -> ScopeView:
        found = self._views.get(names)
        if found is None or found.version != self.table.version:
            if len(self._views) > 64:
                self._views.clear()
            found = self._views[names] = ScopeView(self.table, names)
        return found


@dataclass(slots=True)
class UserGroup:
    """A node group's users: its scope table and the services it was built for."""

    services: tuple[tuple[ServiceKey, str], ...]  # (service, uid header), sorted
    table: ScopeTable
    snapshot: ScopeSnapshot
    by_header: dict[str, list[ServiceKey]]
    header_of: dict[ServiceKey, str]  # the same pairs, looked up on every arrival


class UserScopes:
    """Users' scopes in every node group an Envoy asked for."""

    def __init__(self, user_routes: Callable[[ServiceKey], Mapping[str, int]]) -> None:
        # uid -> pod of the users Envoy carries, per service (domain.sticky.StickyTable).
        self._user_routes = user_routes
        self._groups: dict[str, UserGroup] = {}
        self._staged: set[tuple[ServiceKey, str]] = set()
        self._epoch = secrets.token_hex(4)  # tells this process's versions from another's

    def stage(self, service: ServiceKey, uid: str) -> None:
        """The user's pod in ``service`` changed, or it left Envoy's routes."""
        self._staged.add((service, uid))

    def leaving(self, service: ServiceKey, uid: str, labelled: Callable[[str, int], bool]) -> bool:
        """Whether the user's scope, in some group, still names a pod that is not ``labelled``
        (one that failed: its users' requests go where Envoy's balancer picks)."""
        for group in self._groups.values():
            header = group.header_of.get(service)
            if header is None:
                continue
            placement = group.table.placement(user_key(group.table.uid_headers, header, uid))
            if placement and not all(labelled(cluster, pod) for cluster, pod in placement):
                return True
        return False

    def flush(self) -> tuple[bool, set[str]]:
        """Re-point the staged users' scopes in every group that serves them: whether any scope
        changed, and the groups whose set of placements changed (they need routes)."""
        staged, self._staged = self._staged, set()
        changed, regrouped = False, set()
        for name, group in self._groups.items():
            placements = group.table.placements_changed
            for service, uid in staged:
                header = group.header_of.get(service)
                if header is not None:
                    changed = self._point(group, header, uid) or changed
            if group.table.placements_changed != placements:
                regrouped.add(name)
        return changed, regrouped

    def group(self, name: str, services: Iterable[Service]) -> UserGroup:
        """The group's users, built again from every user when its services or their uid
        headers changed (a user's key depends on them)."""
        shape = tuple(sorted((s.key, s.settings.uid_header) for s in services))
        group = self._groups.get(name)
        if group is not None and group.services == shape:
            return group
        by_header: dict[str, list[ServiceKey]] = {}
        for key, header in shape:
            by_header.setdefault(header, []).append(key)
        table = ScopeTable(sorted(by_header), self._epoch)
        group = self._groups[name] = UserGroup(
            shape, table, ScopeSnapshot(table), by_header, dict(shape)
        )
        for key, header in shape:
            for uid in self._user_routes(key):
                self._point(group, header, uid)
        return group

    def placements(self, name: str) -> Iterable[Placement]:
        return self._groups[name].table.placements()

    def placement_of(
        self, name: str, service: ServiceKey, uid: str
    ) -> tuple[Placement, str] | None:
        """The user's placement in the group as the sticky table has it now (staged or not),
        and the key of its own scope; None if the group does not serve the service."""
        group = self._groups.get(name)
        header = group.header_of.get(service) if group else None
        if group is None or header is None:
            return None
        return self._placement(group, header, uid), user_key(group.table.uid_headers, header, uid)

    def placement_scope(self, name: str, placement: Placement) -> tuple[str, int] | None:
        """The key of the placement's own scope and the revision that brought it; None while
        no flushed user names the placement."""
        table = self._groups[name].table
        if placement not in table.placements():
            return None
        return placement_key(placement), table.placed_at(placement)

    def revision(self, name: str) -> int:
        """The group's scope table revision now."""
        group = self._groups.get(name)
        return group.table.revision if group else 0

    def most(self) -> int:
        """The most scopes any group holds (what one push costs an Envoy grows with it)."""
        return max((len(g.table.routes) for g in self._groups.values()), default=0)

    def _point(self, group: UserGroup, header: str, uid: str) -> bool:
        key = user_key(group.table.uid_headers, header, uid)
        return group.table.point(key, self._placement(group, header, uid))

    def _placement(self, group: UserGroup, header: str, uid: str) -> Placement:
        """Where the user is bound in the group's services that key it by ``header``."""
        pods = {}
        for service in group.by_header[header]:
            index = self._user_routes(service).get(uid)
            if index is not None:
                pods[cluster_name(service)] = index
        return placement_of(pods)
