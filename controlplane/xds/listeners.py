"""The sockets that carry xDS: REST (and the miss path) on aiohttp, ADS on grpclib, one loop."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from aiohttp import web
from grpclib.server import Server

from controlplane.tasks import cancel_all
from controlplane.tls import ReloadingServerContext
from controlplane.xds.server import XdsServer

if TYPE_CHECKING:
    from grpclib._typing import IServable

# Envoy's REST requests repeat its whole node (~80 KB); leave room for a larger one.
_MAX_REST_BODY = 4 * 1024 * 1024


class XdsListeners:
    """Serve ``xds`` over HTTP (discovery routes plus ``extra_routes``) and gRPC (ADS plus
    ``extra_services``, e.g. load reporting).

    Ports 0 pick free ones; the bound ports are ``rest_port`` and ``grpc_port`` after start.
    With ``xds.settings.tls`` both speak TLS and want a client certificate of its CA; the
    certificate files are reloaded when they change.
    """

    def __init__(
        self,
        xds: XdsServer,
        *,
        host: str = "127.0.0.1",
        rest_port: int = 0,
        grpc_port: int = 0,
        extra_routes: list[web.RouteDef] | None = None,
        extra_services: list[IServable] | None = None,
    ) -> None:
        self.xds = xds
        self.host = host
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self._extra_routes = extra_routes or []
        self._extra_services = extra_services or []
        self._runner: web.AppRunner | None = None
        self._grpc: Server | None = None
        tls = xds.settings.tls
        # gRPC needs HTTP/2 (ALPN h2); aiohttp speaks HTTP/1.1 only.
        self.tls = (
            (
                ReloadingServerContext(tls, alpn=["http/1.1"]),
                ReloadingServerContext(tls, alpn=["h2"]),
            )
            if tls is not None
            else ()
        )
        self._reloads: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # The port is taken first (Envoy reaches the miss path on it), but nothing is answered
        # until the state is loaded: a poll served from the empty cache would have a restarted
        # control plane tell Envoy that every service is gone.
        sock = _bind(self.host, self.rest_port)
        try:
            self.rest_port = sock.getsockname()[1]
            settings = self.xds.settings
            self.xds.cache.miss_path = (
                settings.miss_path_host or self.host,
                settings.miss_path_port or self.rest_port,
            )
            await self.xds.start()
        except BaseException:
            sock.close()
            raise
        app = web.Application(client_max_size=_MAX_REST_BODY)
        app.router.add_routes([*self.xds.routes(), *self._extra_routes])
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        rest_tls, grpc_tls = (c.context for c in self.tls) if self.tls else (None, None)
        await web.SockSite(self._runner, sock, ssl_context=rest_tls).start()
        self._grpc = Server([self.xds.ads, *self._extra_services])
        await self._grpc.start(self.host, self.grpc_port, ssl=grpc_tls)
        self._reloads = [asyncio.create_task(c.watch(), name="xds-tls-reload") for c in self.tls]
        # grpclib does not expose the bound port; its asyncio server does.
        sockets: list[socket.socket] = list(getattr(self._grpc._server, "sockets", []))
        self.grpc_port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await cancel_all(self._reloads)
        await self.xds.stop()  # answers held requests and ends streams first
        if self._grpc is not None:
            self._grpc.close()
            await self._grpc.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock
