"""A real admin server on a free loopback port, over the session's real Redis, with a token;
plain HTTP, or either that or HTTPS with a certificate of a throwaway CA
(``plain_or_tls_admin_server``)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from controlplane.admin import AdminSettings, create_admin_app
from controlplane.domain import Pod, RouteRequest, Service, ServiceKey
from controlplane.manager import StatefulRouteManager
from controlplane.runtime.pki import ThrowawayCa
from controlplane.store import Store
from controlplane.tls import ReloadingServerContext, ServerTlsSettings

TOKEN = "security-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAMESPACE, SERVICE = "games", "lobby"
BOUND_USERS = ("alice", "bob", "carol")


@dataclass(frozen=True)
class AdminServer:
    url: str
    manager: StatefulRouteManager
    # What a client trusts: the CA file of an HTTPS server; True (the system's CAs) for HTTP.
    verify: str | bool = True


async def seed(manager: StatefulRouteManager) -> None:
    """games/lobby with three healthy pods and a few bound users (idempotent)."""
    await manager.register_service(Service(namespace=NAMESPACE, name=SERVICE))
    for index in range(3):
        await manager.upsert_pod(
            ServiceKey(NAMESPACE, SERVICE), Pod(index=index, host=f"10.0.0.{index}", port=8080)
        )
    for uid in BOUND_USERS:
        await manager.route_request(RouteRequest(namespace=NAMESPACE, service=SERVICE, uid=uid))


async def serve_admin(
    store: Store, tls: ssl.SSLContext | None = None, ca_file: Path | None = None
) -> AsyncIterator[AdminServer]:
    manager = StatefulRouteManager(store, view_ttl_s=0.0)
    await seed(manager)
    app = create_admin_app(manager, AdminSettings(token=SecretStr(TOKEN), max_body_bytes=8192))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
        host, port = runner.addresses[0][:2]
        scheme = "https" if tls else "http"
        yield AdminServer(f"{scheme}://{host}:{port}", manager, str(ca_file) if ca_file else True)
    finally:
        await runner.cleanup()


@pytest.fixture
async def admin_server(store: Store) -> AsyncIterator[AdminServer]:
    """The admin app served by aiohttp's AppRunner on 127.0.0.1:<free port>, state seeded."""
    async for server in serve_admin(store):
        yield server


@pytest.fixture(params=["http", "https"])
async def plain_or_tls_admin_server(
    request: pytest.FixtureRequest, store: Store, tmp_path: Path
) -> AsyncIterator[AdminServer]:
    """``admin_server``, then the same over HTTPS as ``admin.tls`` serves it (a certificate of
    a throwaway CA)."""
    if request.param == "http":
        async for server in serve_admin(store):
            yield server
        return
    ca = ThrowawayCa(tmp_path)
    cert = ca.issue_server()
    settings = ServerTlsSettings(cert_file=cert.cert_file, key_file=cert.key_file)
    async for server in serve_admin(store, ReloadingServerContext(settings).context, ca.ca_file):
        yield server
