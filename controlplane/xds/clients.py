"""Which Envoys are connected, and what each accepted and rejected (for the admin API)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel

from controlplane.xds.protocol import Reply, Verdict
from controlplane.xds.resources import SCOPED
from controlplane.xds.scopes import revision_of

log = logging.getLogger(__name__)

# How long a REST client may go between two polls and still be a live Envoy.
_REST_POLL_GAP_S = 1.0


class Transport(StrEnum):
    REST = "rest"
    ADS = "ads"
    DELTA = "delta"


class TypeStatusView(BaseModel):
    acked_version: str | None = None
    acked_at: float | None = None
    nacked_version: str | None = None
    nack_message: str | None = None
    nacked_at: float | None = None


class EnvoyView(BaseModel):
    """One connected Envoy as the admin API shows it."""

    node_id: str
    node_group: str
    transport: Transport
    connected_since: float
    last_seen: float
    types: dict[str, TypeStatusView]
    # Its admin API, as its node metadata names it (admin_url); None: not named.
    admin_url: str | None = None
    # The Envoy version the node reports (major.minor.patch); None: not an Envoy or not said.
    envoy_version: str | None = None


@dataclass(slots=True)
class ConnectedEnvoy:
    node_id: str
    node_group: str
    transport: Transport
    connected_since: float
    last_seen: float
    in_flight: int = 0  # REST requests being held; gRPC: 1 while the stream is open
    types: dict[str, TypeStatusView] = field(default_factory=dict)
    # The scope table revision this Envoy last acknowledged; None: no scopes accepted yet.
    scope_revision: int | None = None
    admin_url: str | None = None
    envoy_version: str | None = None

    def view(self) -> EnvoyView:
        return EnvoyView(
            node_id=self.node_id,
            node_group=self.node_group,
            transport=self.transport,
            connected_since=self.connected_since,
            last_seen=self.last_seen,
            types={t: s.model_copy() for t, s in self.types.items()},
            admin_url=self.admin_url,
            envoy_version=self.envoy_version,
        )


class XdsObserver(Protocol):
    """Counts what the transports send and what Envoys answer (the admin API's metrics)."""

    def xds_pushed(self, type_url: str) -> None: ...

    def xds_replied(self, type_url: str, *, accepted: bool) -> None: ...


class ConnectedEnvoys:
    """Registry of Envoys by (node id, transport). REST clients expire when idle."""

    def __init__(
        self,
        rest_expiry_s: float,
        clock: Callable[[], float] = time.time,
        observer: XdsObserver | None = None,
    ) -> None:
        self._clients: dict[tuple[str, Transport], ConnectedEnvoy] = {}
        self._rest_expiry_s = rest_expiry_s
        self._clock = clock
        self._observer = observer
        self._scope_acks: dict[str, asyncio.Event] = {}  # group -> set on each scope ACK

    def sent(self, type_url: str, responses: int = 1) -> None:
        """Responses of ``type_url`` went out."""
        if self._observer is not None:
            for _ in range(responses):
                self._observer.xds_pushed(type_url)

    def enter(
        self,
        node_id: str,
        group: str,
        transport: Transport,
        admin_url: str | None = None,
        envoy_version: str | None = None,
    ) -> ConnectedEnvoy:
        """A request or stream from this node begins (``admin_url``: where its admin API is)."""
        now = self._clock()
        key = (node_id, transport)
        client = self._clients.get(key)
        if client is None or (transport is not Transport.REST and client.in_flight):
            # A new gRPC stream from the same node replaces the old one (Envoy restarted).
            client = ConnectedEnvoy(node_id, group, transport, now, now)
            self._clients[key] = client
        client.node_group = group
        client.admin_url = admin_url
        client.envoy_version = envoy_version
        client.last_seen = now
        client.in_flight += 1
        return client

    def leave(self, client: ConnectedEnvoy) -> None:
        """The request or stream ended."""
        client.in_flight -= 1
        client.last_seen = self._clock()
        key = (client.node_id, client.transport)
        if client.transport is not Transport.REST and self._clients.get(key) is client:
            del self._clients[key]
            self._scopes_acked(client.node_group)

    async def scopes_live(self, group: str, revision: int, timeout_s: float) -> bool:
        """Wait until every Envoy of ``group`` that holds scopes has acknowledged ``revision``
        of the group's scope table; False if one has not within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self._scopes_at(group, revision):
                    await self._scope_acks.setdefault(group, asyncio.Event()).wait()
        except TimeoutError:
            return False
        return True

    def _scopes_at(self, group: str, revision: int) -> bool:
        # A REST client between polls is waited for a moment; one gone quiet (an Envoy that
        # stopped) is not, though the registry keeps it until it expires.
        quiet = self._clock() - _REST_POLL_GAP_S
        return all(
            c.scope_revision >= revision
            for c in self._clients.values()
            if c.node_group == group
            and c.scope_revision is not None
            and (c.transport is not Transport.REST or c.in_flight > 0 or c.last_seen > quiet)
        )

    def _scopes_acked(self, group: str) -> None:
        event = self._scope_acks.pop(group, None)
        if event is not None:
            event.set()  # every waiter checks again; the next wait makes a new event

    def record(self, client: ConnectedEnvoy, type_url: str, reply: Reply) -> None:
        status = client.types.setdefault(type_url, TypeStatusView())
        now = self._clock()
        if self._observer is not None:
            self._observer.xds_replied(type_url, accepted=reply.verdict is Verdict.ACK)
        if reply.verdict is Verdict.ACK:
            status.acked_version, status.acked_at = reply.version, now
            if type_url == SCOPED and (revision := revision_of(reply.version)) is not None:
                client.scope_revision = revision
                self._scopes_acked(client.node_group)
            return
        status.nacked_version, status.nack_message, status.nacked_at = (
            reply.version,
            reply.message,
            now,
        )
        log.warning(
            "xds nack node=%r group=%r transport=%s type=%s version=%r message=%r",
            client.node_id,
            client.node_group,
            client.transport,
            type_url.rsplit(".", 1)[-1],
            reply.version,
            reply.message,
        )

    def admin_urls(self) -> list[str]:
        """The admin APIs the connected Envoys named, each once."""
        self._expire()
        return sorted({c.admin_url for c in self._clients.values() if c.admin_url})

    def node_ids(self, group: str) -> set[str]:
        """The node ids of the group's connected Envoys."""
        self._expire()
        return {c.node_id for c in self._clients.values() if c.node_group == group}

    def views(self) -> list[EnvoyView]:
        """Every connected Envoy, oldest connection first."""
        self._expire()
        return sorted(
            (c.view() for c in self._clients.values()), key=lambda v: (v.connected_since, v.node_id)
        )

    def _expire(self) -> None:
        cutoff = self._clock() - self._rest_expiry_s
        for key, client in list(self._clients.items()):
            if client.in_flight <= 0 and client.last_seen < cutoff:
                del self._clients[key]
