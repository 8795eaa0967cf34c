"""ADS over grpclib: StreamAggregatedResources (SotW) and DeltaAggregatedResources.

Each stream has one task that sends and one that reads. The reader applies requests (ACKs,
NACKs, subscriptions) to the stream's ``AdsSession`` (``session.py``: the protocol's rules,
without a socket) and wakes the sender; the cache wakes it on every change. The sender sends
what the session says is due. This module only moves bytes and tells ``ConnectedEnvoys``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpclib.const
import grpclib.server
from grpclib.exceptions import GRPCError

from controlplane.xds import resources as res
from controlplane.xds import wire
from controlplane.xds.cache import SnapshotCache, SnapshotKey
from controlplane.xds.clients import ConnectedEnvoys, Transport
from controlplane.xds.config import XdsSettings
from controlplane.xds.envoy_version import EnvoyGate, shown_version
from controlplane.xds.identity import PeerCheck
from controlplane.xds.protocol import DeltaRequest, Node, Request, admin_url, node_group
from controlplane.xds.session import AdsSession

_SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService"


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
        self,
        cache: SnapshotCache,
        clients: ConnectedEnvoys,
        settings: XdsSettings,
        gate: EnvoyGate,
        peers: PeerCheck | None = None,
    ) -> None:
        self._cache = cache
        self._clients = clients
        self._settings = settings
        self._gate = gate
        self._peers = peers or PeerCheck(None)

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
        await self._serve(stream, Transport.ADS, AdsSession.sotw)

    async def _delta(self, stream: grpclib.server.Stream[DeltaRequest, _Encoded]) -> None:
        await self._serve(stream, Transport.DELTA, AdsSession.delta)

    async def _serve(
        self,
        stream: Any,
        transport: Transport,
        new_session: Callable[[], AdsSession],
    ) -> None:
        requests = _well_formed(stream)
        first = await anext(requests, None)
        if first is None:
            return
        node: Node = first.node or Node()
        refusal = self._gate.admit(node)
        if refusal is not None:
            # Envoy logs the status and reconnects later (with backoff), refused again.
            raise GRPCError(grpclib.const.Status.FAILED_PRECONDITION, refusal)
        group = node_group(node, self._settings.node_group_key)
        refusal = self._peers.refusal(stream.peer.cert(), node_ids={node.id}, group=group)
        if refusal is not None:
            raise GRPCError(grpclib.const.Status.PERMISSION_DENIED, refusal)
        peer = stream.peer.addr()
        where = admin_url(node, peer[0] if peer else None)
        client = self._clients.enter(node.id, group, transport, where, shown_version(node))
        key = SnapshotKey(group, res.SourceKind.ADS)
        session = new_session()
        wake = asyncio.Event()
        unwatch = self._cache.watch(wake.set)

        def apply(request: Request | DeltaRequest) -> None:
            reply = session.on_request(request)
            if reply is not None:
                self._clients.record(client, request.type_url, reply)

        apply(first)
        reader = asyncio.create_task(_read(requests, apply, wake))
        try:
            while not reader.done() and not self._cache.closed:
                for push in session.due(self._cache.snapshot(key)):
                    self._clients.sent(push.type_url, len(push.messages))
                    for message in push.messages:
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


async def _read(
    requests: AsyncIterator[Any], apply: Callable[[Any], None], wake: asyncio.Event
) -> None:
    try:
        async for request in requests:
            apply(request)
            wake.set()
    finally:
        wake.set()  # the stream ended: let the sender stop
