"""A running xDS control plane (REST on aiohttp, ADS on grpclib) for tests and benchmarks."""

from __future__ import annotations

from aiohttp import web

from controlplane.xds.config import XdsSettings
from controlplane.xds.envoy_version import MINIMUM_ENVOY, EnvoyVersion
from controlplane.xds.listeners import XdsListeners
from controlplane.xds.naming import MISS_PATH, SCOPE_KEY_HEADER, UID_HEADER
from controlplane.xds.server import XdsServer
from controlplane.xds.source import StateSource


class MissAnswers:
    """A miss path that answers, for the uids it is given, the key of a scope to select (as
    the control plane names a placement's scope); it places nobody else (503: Envoy balances
    a user it holds no scope for, and refuses one whose pod is gone)."""

    def __init__(self) -> None:
        self.scopes: dict[str, str] = {}

    async def place(self, request: web.Request) -> web.Response:
        scope = self.scopes.get(request.headers.get(UID_HEADER, ""))
        if scope is None:
            return web.Response(status=503)
        return web.Response(status=200, headers={SCOPE_KEY_HEADER: scope})


class XdsStack(XdsListeners):
    """XdsServer over ``source`` plus the HTTP and gRPC servers that carry it, on free ports."""

    def __init__(
        self,
        source: StateSource,
        settings: XdsSettings | None = None,
        *,
        minimum_envoy: EnvoyVersion = MINIMUM_ENVOY,
    ) -> None:
        self.miss_answers = MissAnswers()
        miss_path = web.post(MISS_PATH, self.miss_answers.place)
        server = XdsServer(source, settings, minimum_envoy=minimum_envoy)
        super().__init__(server, extra_routes=[miss_path])

    async def start(self) -> XdsStack:  # type: ignore[override]
        await super().start()
        return self
