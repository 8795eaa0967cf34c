"""Whether each connected Envoy runs the configuration this control plane serves now.

The xDS server says what each Envoy last ACKed (``EnvoyView``); the snapshot cache says what
its node group should have now. An ACKed version is current when it is the type's version in
the group's snapshot (what an Envoy asking for every resource of the type is sent), or, for a
type of one resource asked for by name, that resource's version. A delta stream ACKs a digest
of the differences it was sent, comparable only for the users' scopes (their table version):
for its other types, and for any type the snapshot lacks, ``up_to_date`` is None (not known).
"""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.xds.cache import Snapshot, SnapshotCache, SnapshotKey
from controlplane.xds.clients import EnvoyView, Transport, TypeStatusView
from controlplane.xds.resources import SCOPED, SourceKind

# type url -> the versions an Envoy holding the current resources may have ACKed (shown: first)
CurrentVersions = Mapping[str, tuple[str, ...]]


class EnvoyTypeStatus(TypeStatusView):
    current_version: str | None = None  # the type's version served now; None: not known
    up_to_date: bool | None = None  # the ACKed version is the current one; None: not known


class EnvoyStatus(EnvoyView):
    """One connected Envoy, with whether what it ACKed is what is served now."""

    types: dict[str, EnvoyTypeStatus]  # type: ignore[assignment]
    up_to_date: bool | None = None  # every type known is current; None: none is known


def current_versions(snapshot: Snapshot, transport: Transport) -> CurrentVersions:
    """What an Envoy of ``snapshot``'s group on ``transport`` ACKs once it holds it all."""
    found: dict[str, tuple[str, ...]] = {}
    for type_url, typed in snapshot.types.items():
        if transport is Transport.DELTA and type_url != SCOPED:
            continue
        versions = (typed.version, *typed.versions.values()) if len(typed.versions) == 1 else ()
        found[type_url] = versions or (typed.version,)
    return found


def envoy_status(view: EnvoyView, current: CurrentVersions) -> EnvoyStatus:
    types: dict[str, EnvoyTypeStatus] = {}
    for type_url, status in view.types.items():
        versions = current.get(type_url, ())
        types[type_url] = EnvoyTypeStatus(
            **status.model_dump(),
            current_version=versions[0] if versions else None,
            up_to_date=status.acked_version in versions if versions else None,
        )
    known = [t.up_to_date for t in types.values() if t.up_to_date is not None]
    return EnvoyStatus(
        **view.model_dump(exclude={"types"}), types=types, up_to_date=all(known) if known else None
    )


def envoy_statuses(views: list[EnvoyView], cache: SnapshotCache) -> list[EnvoyStatus]:
    """Every view with its currency, read from the snapshots its group is served from."""
    statuses = []
    for view in views:
        kind = SourceKind.REST if view.transport is Transport.REST else SourceKind.ADS
        snapshot = cache.snapshot(SnapshotKey(view.node_group, kind))
        statuses.append(envoy_status(view, current_versions(snapshot, view.transport)))
    return statuses
