"""A running xDS control plane (REST on aiohttp, ADS on grpclib) for tests and benchmarks."""

from __future__ import annotations

from controlplane.xds.config import XdsSettings
from controlplane.xds.listeners import XdsListeners
from controlplane.xds.server import XdsServer
from controlplane.xds.source import StateSource


class XdsStack(XdsListeners):
    """XdsServer over ``source`` plus the HTTP and gRPC servers that carry it, on free ports."""

    def __init__(self, source: StateSource, settings: XdsSettings | None = None) -> None:
        super().__init__(XdsServer(source, settings))

    async def start(self) -> XdsStack:  # type: ignore[override]
        await super().start()
        return self
