"""The xDS protocol's rules, sans-IO: what a request means and when a response is due.

Transports (REST, gRPC SotW, gRPC delta) turn bytes into the request shapes below, feed them to
a subscription, and send what the subscription says is due. Rules:

- SotW: a response is due when the resources' version differs from the last one sent (and is
  not the one the client rejected), or when the requested names changed, or when forced.
  A request echoing our last nonce is an ACK, or a NACK if it carries an error.
  Requests echoing an older nonce are stale and ignored.
- REST has no nonces and no error detail: a request naming the version before the one we sent
  is a NACK of what we sent; one naming neither is a client that restarted.
- Delta: the server tracks what the client has (name -> version) and sends only differences.
  A NACKed resource counts as delivered so it is not re-sent; its next version is. A stream
  synced to a source that says what changed since (a group's scopes: one per user) looks only
  at those names, so a user's arrival costs O(1), not O(users).
- Envoy keeps an updated EDS cluster warming until its endpoints arrive: after a CDS push, the
  endpoints of the pushed clusters are due again even when unchanged (``force``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Node:
    id: str = ""
    cluster: str = ""
    metadata: Mapping[str, object] = field(default_factory=dict)
    user_agent_name: str = ""  # "envoy" for Envoy
    # user_agent_build_version's (major, minor, patch); None: not sent
    build_version: tuple[int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """A SotW DiscoveryRequest (gRPC or REST) with the fields the server reads."""

    type_url: str
    version_info: str = ""
    node: Node | None = None
    resource_names: tuple[str, ...] = ()
    response_nonce: str = ""
    error: str | None = None  # error_detail.message; None: no error detail

    @property
    def names(self) -> tuple[str, ...]:
        """The names asked for, sorted; () asks for every resource of the type."""
        return normalize_names(self.resource_names)


@dataclass(frozen=True, slots=True)
class DeltaRequest:
    type_url: str
    node: Node | None = None
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    initial_versions: Mapping[str, str] = field(default_factory=dict)
    response_nonce: str = ""
    error: str | None = None


def node_group(node: Node | None, key: str) -> str:
    """The group a node belongs to, by ``key``: "cluster", "id" or "metadata.<field>"."""
    if node is None:
        return ""
    if key == "cluster":
        return node.cluster
    if key == "id":
        return node.id
    value = node.metadata.get(key.removeprefix("metadata."), "")
    return value if isinstance(value, str) else str(value)


# The node metadata key where an Envoy says where its admin API is ("http://host:port").
ADMIN_URL_METADATA = "admin_url"
_UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def admin_url(node: Node | None, peer_host: str | None) -> str | None:
    """The admin API an Envoy names in its node metadata (``admin_url``), if any. An Envoy
    whose admin listens on every address (0.0.0.0) is reached at the address it connects
    from."""
    value = node.metadata.get(ADMIN_URL_METADATA) if node is not None else None
    if not isinstance(value, str):
        return None
    scheme, sep, rest = value.rstrip("/").partition("://")
    host, colon, port = rest.rpartition(":")
    if scheme not in ("http", "https") or not sep or not colon or not port.isdigit():
        return None
    if host in _UNSPECIFIED_HOSTS:
        if not peer_host:
            return None
        host = f"[{peer_host}]" if ":" in peer_host else peer_host
    return f"{scheme}://{host}:{port}"


def normalize_names(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if not names or "*" in names:
        return ()
    return tuple(sorted(set(names)))


class Versioned(Protocol):
    """Every resource of a type: name -> version, and what changed since a revision."""

    @property
    def versions(self) -> Mapping[str, str]: ...

    @property
    def revision(self) -> int: ...

    def changed_since(self, revision: int) -> set[str] | None:
        """Names changed after ``revision`` (None: not known, compare every name)."""
        ...


class Verdict(StrEnum):
    ACK = "ack"
    NACK = "nack"


@dataclass(frozen=True, slots=True)
class Reply:
    """What a request told us about the last response: accepted or rejected."""

    verdict: Verdict
    version: str
    message: str = ""


@dataclass(slots=True)
class SotwSubscription:
    """One resource type as one SotW client sees it."""

    type_url: str
    names: tuple[str, ...] = ()
    sent_version: str | None = None  # None: nothing known about the client yet
    sent_names: tuple[str, ...] = ()
    sent_nonce: str = ""
    acked_version: str = ""
    rejected_version: str | None = None
    force: bool = False
    # A REST client that accepted nothing yet and polls with no version again: a new Envoy, or
    # a rejection of its first response. The first response goes out once more; twice is a NACK.
    first_resent: str | None = None

    def on_request(self, request: Request) -> Reply | None:
        """Apply a gRPC request (with nonces); return the ACK or NACK it carries, if any."""
        if not request.response_nonce:
            # A new subscription: the client tells us what it already has.
            self._restart(request)
            return None
        if request.response_nonce != self.sent_nonce:
            return None  # answers a response we have since replaced
        self.names = request.names
        if request.error is not None:
            return self._reject(request.error)
        self.acked_version = request.version_info
        return Reply(Verdict.ACK, request.version_info)

    def on_poll(self, request: Request) -> Reply | None:
        """Apply a REST request: no nonces, so a NACK shows as the previous version repeated."""
        version = request.version_info
        self.names = request.names
        if self.sent_version is None or version not in (self.sent_version, self.acked_version):
            self._restart(request)
            return None
        if version == self.sent_version:
            if version == self.acked_version:
                return None
            self.acked_version = version
            return Reply(Verdict.ACK, version)
        if not version and self.first_resent != self.sent_version:
            self.first_resent = self.sent_version
            self._restart(request)
            return None
        rejected = self._reject("rejected (REST carries no error detail)")
        # The client still runs the version it names; answering it would resend the rejected one.
        self.sent_version = version
        return rejected

    def due(self, version: str) -> bool:
        """Whether a response carrying ``version`` should go out now."""
        if self.force or self.names != self.sent_names:
            return True
        return version not in (self.sent_version, self.rejected_version)

    def sent(self, version: str, nonce: str = "") -> None:
        self.sent_version = version
        self.sent_names = self.names
        self.sent_nonce = nonce
        self.force = False

    def _restart(self, request: Request) -> None:
        self.names = request.names
        self.sent_version = self.acked_version = request.version_info
        self.sent_names = self.names
        self.rejected_version = None

    def _reject(self, message: str) -> Reply:
        assert self.sent_version is not None
        self.rejected_version = self.sent_version
        return Reply(Verdict.NACK, self.sent_version, message)


@dataclass(slots=True)
class DeltaSubscription:
    """One resource type as one delta client sees it."""

    type_url: str
    started: bool = False
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    # What the client has: name -> version (what it told us, or what we sent it).
    known: dict[str, str] = field(default_factory=dict)
    sent_nonce: str = ""
    sent_versions: dict[str, str] = field(default_factory=dict)
    sent_label: str = ""  # the version an ACK of the last response acknowledges
    answered: bool = False  # a first response is due even when it would be empty
    # The source and revision ``known`` was last brought up to date with.
    synced: tuple[Versioned, int] | None = None

    def on_request(self, request: DeltaRequest) -> Reply | None:
        """Apply a delta request; return the ACK or NACK of our last response, if any."""
        if not self.started:
            self.started = True
            self.wildcard = not request.subscribe or "*" in request.subscribe
            self.known.update(request.initial_versions)
        for name in request.subscribe:
            if name != "*":
                self.names.add(name)
        for name in request.unsubscribe:
            self.names.discard(name)
            self.known.pop(name, None)
        if request.subscribe or request.unsubscribe:
            self.synced = None
        if not request.response_nonce or request.response_nonce != self.sent_nonce:
            return None
        version = self.sent_label or _summary(self.sent_versions)
        if request.error is not None:
            # What we sent stays "known": re-sending it would only be rejected again.
            return Reply(Verdict.NACK, version, request.error)
        return Reply(Verdict.ACK, version)

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def changes(self, current: Versioned) -> tuple[list[str], list[str]]:
        """(names to send, names to remove) given every resource's current version.

        Due when either is non-empty, or when the subscription has had no answer yet.
        Afterwards the subscription counts as synced to ``current``.
        """
        versions = current.versions
        candidates = None
        if self.synced is not None and self.synced[0] is current:
            candidates = current.changed_since(self.synced[1])
        if candidates is None:
            updated = [n for n, v in versions.items() if self.wants(n) and self.known.get(n) != v]
            removed = [n for n in self.known if n not in versions and self.wants(n)]
        else:
            updated = [
                n
                for n in candidates
                if n in versions and self.wants(n) and self.known.get(n) != versions[n]
            ]
            removed = [n for n in candidates if n not in versions and n in self.known]
        self.synced = (current, current.revision)
        return sorted(updated), sorted(removed)

    def sent(
        self, versions: Mapping[str, str], removed: list[str], nonce: str, label: str = ""
    ) -> None:
        self.known.update(versions)
        for name in removed:
            self.known.pop(name, None)
        self.sent_versions = dict(versions)
        self.sent_nonce = nonce
        self.sent_label = label
        self.answered = True

    def force(self, names: list[str]) -> None:
        """Send these resources again at the next push even if unchanged."""
        for name in names:
            self.known.pop(name, None)
        self.synced = None


def _summary(versions: Mapping[str, str]) -> str:
    return ",".join(f"{n}={v}" for n, v in sorted(versions.items()))
