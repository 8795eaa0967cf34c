"""A real admin server on a free loopback port, over the session's real Redis, with a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from pydantic import SecretStr

from controlplane.admin import AdminSettings, create_admin_app
from controlplane.domain import Pod, RouteRequest, Service, ServiceKey
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store

TOKEN = "security-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAMESPACE, SERVICE = "games", "lobby"
BOUND_USERS = ("alice", "bob", "carol")


@dataclass(frozen=True)
class AdminServer:
    url: str
    manager: StatefulRouteManager


async def seed(manager: StatefulRouteManager) -> None:
    """games/lobby with three healthy pods and a few bound users (idempotent)."""
    await manager.register_service(Service(namespace=NAMESPACE, name=SERVICE))
    for index in range(3):
        await manager.upsert_pod(
            ServiceKey(NAMESPACE, SERVICE), Pod(index=index, host=f"10.0.0.{index}", port=8080)
        )
    for uid in BOUND_USERS:
        await manager.route_request(RouteRequest(namespace=NAMESPACE, service=SERVICE, uid=uid))


@pytest.fixture
async def admin_server(store: Store) -> AsyncIterator[AdminServer]:
    """The admin app served by aiohttp's AppRunner on 127.0.0.1:<free port>, state seeded."""
    manager = StatefulRouteManager(store, view_ttl_s=0.0)
    await seed(manager)
    app = create_admin_app(manager, AdminSettings(token=SecretStr(TOKEN), max_body_bytes=8192))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield AdminServer(f"http://{host}:{port}", manager)
    finally:
        await runner.cleanup()
