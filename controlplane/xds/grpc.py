"""ADS over grpclib: StreamAggregatedResources (SotW) and DeltaAggregatedResources.

Each stream has one task that sends and one that reads. The reader applies requests (ACKs,
NACKs, subscriptions) to the stream's session and wakes the sender; the cache wakes it on every
change. The sender pushes what is due in CDS -> EDS -> LDS -> RDS order. Envelopes are encoded
by ``wire`` around resources serialized once per version.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import grpclib.const
import grpclib.server
from grpclib.exceptions import GRPCError

from controlplane.xds import resources as res
from controlplane.xds import wire
from controlplane.xds.cache import SnapshotCache, SnapshotKey, TypeSnapshot
from controlplane.xds.clients import ConnectedEnvoy, ConnectedEnvoys, Transport
from controlplane.xds.config import XdsSettings
from controlplane.xds.protocol import (
    DeltaRequest,
    DeltaSubscription,
    Node,
    Request,
    SotwSubscription,
    node_group,
)
from controlplane.xds.user_scopes import ScopeSnapshot

_SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService"
_KNOWN_TYPES = frozenset(res.PUSH_ORDER)
# Resources per delta response (Envoy applies a batch of 5,000 scopes in ~25 ms).
_BATCH = 5000


class _Encoded:
    """An already serialized response, handed to grpclib's codec as is."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data


class _SotwRequest:
    @staticmethod
    def FromString(data: bytes) -> Request:
        return wire.decode_request(data)


class _DeltaRequest:
    @staticmethod
    def FromString(data: bytes) -> DeltaRequest:
        return wire.decode_delta_request(data)


class AggregatedDiscovery:
    """The ADS service; register it with a ``grpclib.server.Server``."""

    def __init__(
        self, cache: SnapshotCache, clients: ConnectedEnvoys, settings: XdsSettings
    ) -> None:
        self._cache = cache
        self._clients = clients
        self._settings = settings

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        stream = grpclib.const.Cardinality.STREAM_STREAM
        return {
            f"{_SERVICE}/StreamAggregatedResources": grpclib.const.Handler(
                self._sotw, stream, _SotwRequest, _Encoded
            ),
            f"{_SERVICE}/DeltaAggregatedResources": grpclib.const.Handler(
                self._delta, stream, _DeltaRequest, _Encoded
            ),
        }

    async def _sotw(self, stream: grpclib.server.Stream[Request, _Encoded]) -> None:
        await self._serve(stream, Transport.ADS, _SotwSession)

    async def _delta(self, stream: grpclib.server.Stream[DeltaRequest, _Encoded]) -> None:
        await self._serve(stream, Transport.DELTA, _DeltaSession)

    async def _serve(
        self,
        stream: Any,
        transport: Transport,
        session_type: type[_Session],
    ) -> None:
        requests = _well_formed(stream)
        first = await anext(requests, None)
        if first is None:
            return
        node: Node = first.node or Node()
        group = node_group(node, self._settings.node_group_key)
        client = self._clients.enter(node.id, group, transport)
        key = SnapshotKey(group, res.SourceKind.ADS)
        session = session_type(self._cache, self._clients, key, client)
        wake = asyncio.Event()
        unwatch = self._cache.watch(wake.set)
        session.on_request(first)
        reader = asyncio.create_task(_read(requests, session, wake))
        try:
            while not reader.done() and not self._cache.closed:
                for message in session.due():
                    await stream.send_message(_Encoded(message))
                await wake.wait()
                wake.clear()
        finally:
            unwatch()
            self._clients.leave(client)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _well_formed(stream: Any) -> AsyncIterator[Any]:
    """The stream's requests; a malformed one ends the stream with INVALID_ARGUMENT (not an
    application error): the peer's fault, and the server serves other streams as before."""
    try:
        async for request in stream:
            yield request
    except wire.WireError as exc:
        raise GRPCError(
            grpclib.const.Status.INVALID_ARGUMENT, f"malformed request: {exc}"
        ) from None


async def _read(requests: AsyncIterator[Any], session: _Session, wake: asyncio.Event) -> None:
    try:
        async for request in requests:
            session.on_request(request)
            wake.set()
    finally:
        wake.set()  # the stream ended: let the sender stop


class _Session:
    """What one stream's client subscribed to, and what it has accepted or rejected."""

    def __init__(
        self,
        cache: SnapshotCache,
        clients: ConnectedEnvoys,
        key: SnapshotKey,
        client: ConnectedEnvoy,
    ) -> None:
        self._cache, self._clients, self._key, self._client = cache, clients, key, client
        self._subscriptions: dict[str, Any] = {}
        self._nonces = itertools.count(1)

    def on_request(self, request: Any) -> None:
        if request.type_url not in _KNOWN_TYPES:
            return
        sub = self._subscriptions.get(request.type_url)
        if sub is None:
            sub = self._subscriptions[request.type_url] = self._subscribe(request.type_url)
        reply = sub.on_request(request)
        if reply is not None:
            self._clients.record(self._client, request.type_url, reply)

    def due(self) -> list[bytes]:
        """The responses to send now, in push order."""
        snapshot = self._cache.snapshot(self._key)
        out = []
        for type_url in res.PUSH_ORDER:
            sub = self._subscriptions.get(type_url)
            if sub is not None and (responses := self._respond(sub, snapshot.type(type_url))):
                self._clients.sent(type_url, len(responses))
                out.extend(responses)
        return out

    def _nonce(self) -> str:
        return str(next(self._nonces))

    def _subscribe(self, type_url: str) -> Any:
        raise NotImplementedError

    def _respond(self, sub: Any, current: TypeSnapshot | ScopeSnapshot) -> list[bytes]:
        raise NotImplementedError


class _SotwSession(_Session):
    def _subscribe(self, type_url: str) -> SotwSubscription:
        return SotwSubscription(type_url)

    def _respond(self, sub: SotwSubscription, current: TypeSnapshot | ScopeSnapshot) -> list[bytes]:
        view = current.view(sub.names)
        if not sub.due(view.version):
            return []
        nonce = self._nonce()
        type_url = current.type_url
        sub.sent(view.version, nonce)
        endpoints = self._subscriptions.get(res.ENDPOINT)
        if type_url == res.CLUSTER and endpoints is not None:
            endpoints.force = True  # updated clusters stay warming until these arrive
        return [
            wire.discovery_response(view.version, type_url, view.sotw_resources(type_url), nonce)
        ]


class _DeltaSession(_Session):
    def _subscribe(self, type_url: str) -> DeltaSubscription:
        return DeltaSubscription(type_url)

    def _respond(
        self, sub: DeltaSubscription, current: TypeSnapshot | ScopeSnapshot
    ) -> list[bytes]:
        updated, removed = sub.changes(current)
        if not (updated or removed or not sub.answered):
            return []
        endpoints = self._subscriptions.get(res.ENDPOINT)
        if current.type_url == res.CLUSTER and endpoints is not None:
            endpoints.force(updated)  # updated clusters stay warming until these arrive
        # An ACK of scopes tells which revision of the scope table this Envoy holds.
        label = current.version if current.type_url == res.SCOPED else ""
        # An Envoy (re)connecting gets every scope of its group: in bounded messages, so neither
        # side holds one of hundreds of megabytes. Only the last one's ACK counts.
        batches = [updated[i : i + _BATCH] for i in range(0, len(updated), _BATCH)] or [[]]
        out = []
        for number, batch in enumerate(batches, 1):
            nonce = self._nonce()
            gone = removed if number == len(batches) else []
            versions = {name: current.versions[name] for name in batch}
            sub.sent(versions, gone, nonce, label)
            items = ((name, version, current.proto(name)) for name, version in versions.items())
            out.append(wire.delta_discovery_response(current.type_url, items, gone, nonce))
        return out
