"""Envoy's load reporting service (LRS) over grpclib: StreamLoadStats.

Envoy opens the stream with its node; we answer once, asking for every cluster at endpoint
granularity every ``interval_s``, and from then on Envoy sends a report per interval. Each
report goes to the ``LoadReportSink``; when the stream ends the sink forgets that Envoy.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, Protocol

import grpclib.const
import grpclib.server
from envoy_data_plane.envoy.service.load_stats.v3 import LoadStatsResponse
from grpclib.exceptions import GRPCError

from controlplane.domain.fleet_evidence import EndpointLoad
from controlplane.xds import wire
from controlplane.xds.protocol import Node

_SERVICE = "/envoy.service.load_stats.v3.LoadReportingService"


class LoadReportSink(Protocol):
    """Who the load reports go to (the fleet signals)."""

    async def load_reported(self, envoy: str, loads: Sequence[EndpointLoad]) -> None: ...

    async def envoy_gone(self, envoy: str) -> None: ...


class _Report:
    """A decoded LoadStatsRequest, as grpclib's codec hands it to the handler."""

    __slots__ = ("loads", "node")

    def __init__(self, node: Node | None, loads: list[EndpointLoad]) -> None:
        self.node = node
        self.loads = loads

    @staticmethod
    def FromString(data: bytes) -> _Report:
        return _Report(*wire.decode_load_stats_request(data))


class LoadReporting:
    """The LRS service; register it with a ``grpclib.server.Server``."""

    def __init__(self, sink: LoadReportSink, interval_s: float) -> None:
        self._sink = sink
        # Endpoint granularity: per-pod counts are the point. Every cluster: Envoy then reports
        # services added later without a new answer, and ours are told apart by their names.
        self._answer = LoadStatsResponse(
            send_all_clusters=True,
            load_reporting_interval=datetime.timedelta(seconds=interval_s),
            report_endpoint_granularity=True,
        )

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            f"{_SERVICE}/StreamLoadStats": grpclib.const.Handler(
                self._stream,
                grpclib.const.Cardinality.STREAM_STREAM,
                _Report,
                LoadStatsResponse,
            )
        }

    async def _stream(self, stream: grpclib.server.Stream[_Report, LoadStatsResponse]) -> None:
        first = await _receive(stream)
        if first is None:
            return
        envoy = _envoy_name(first.node, stream)
        await stream.send_message(self._answer)
        try:
            # The first message carries no stats; the next ones a report each.
            while (report := await _receive(stream)) is not None:
                await self._sink.load_reported(envoy, report.loads)
        finally:
            await self._sink.envoy_gone(envoy)


async def _receive(stream: Any) -> _Report | None:
    try:
        report: _Report | None = await stream.recv_message()
    except wire.WireError as exc:
        raise GRPCError(
            grpclib.const.Status.INVALID_ARGUMENT, f"malformed load report: {exc}"
        ) from None
    return report


def _envoy_name(node: Node | None, stream: Any) -> str:
    """The reporting Envoy: its node id and where its stream comes from (two Envoys that share
    a node id stay two reporters)."""
    peer = stream.peer.addr()
    where = f"{peer[0]}:{peer[1]}" if peer else "?"
    return f"{node.id if node else ''}@{where}"
