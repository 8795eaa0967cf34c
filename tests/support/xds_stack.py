"""A running xDS control plane (REST on aiohttp, ADS on grpclib) for tests and benchmarks."""

from __future__ import annotations

from aiohttp import web

from controlplane.xds.config import XdsSettings
from controlplane.xds.envoy_version import MINIMUM_ENVOY, EnvoyVersion
from controlplane.xds.listeners import XdsListeners
from controlplane.xds.naming import MISS_PATH
from controlplane.xds.server import XdsServer
from controlplane.xds.source import StateSource


async def place_nobody(_: web.Request) -> web.Response:
    """A miss path that places nobody: Envoy balances every user it holds no scope for."""
    return web.Response(status=503)


class XdsStack(XdsListeners):
    """XdsServer over ``source`` plus the HTTP and gRPC servers that carry it, on free ports."""

    def __init__(
        self,
        source: StateSource,
        settings: XdsSettings | None = None,
        *,
        minimum_envoy: EnvoyVersion = MINIMUM_ENVOY,
    ) -> None:
        miss_path = web.post(MISS_PATH, place_nobody)
        server = XdsServer(source, settings, minimum_envoy=minimum_envoy)
        super().__init__(server, extra_routes=[miss_path])

    async def start(self) -> XdsStack:  # type: ignore[override]
        await super().start()
        return self
