"""An admin app over a real Redis, served on a loopback port by aiohttp's test server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from admin_support import AUTH, TOKEN, Client
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from controlplane.admin import AdminSettings, create_admin_app
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store


@pytest.fixture
def manager(store: Store) -> StatefulRouteManager:
    # No view cache: every request sees what the previous one wrote.
    return StatefulRouteManager(store, view_ttl_s=0.0)


@pytest.fixture
def settings() -> AdminSettings:
    return AdminSettings(token=SecretStr(TOKEN), max_body_bytes=8192)


@pytest.fixture
async def api(manager: StatefulRouteManager, settings: AdminSettings) -> AsyncIterator[Client]:
    """A client that sends the token with every request."""
    app = create_admin_app(manager, settings)
    async with TestClient(TestServer(app), headers=AUTH) as client:
        yield client


@pytest.fixture
async def anonymous(api: Client) -> AsyncIterator[ClientSession]:
    """A client of the same server that sends no token."""
    async with ClientSession(base_url=api.make_url("/")) as session:
        yield session
