"""An admin app over a real Redis, served on a loopback port by pytest-aiohttp's fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from admin_support import AUTH, TOKEN, Client
from aiohttp import ClientSession
from pydantic import SecretStr
from pytest_aiohttp import AiohttpClient

from controlplane.admin import AdminSettings, create_admin_app
from controlplane.admin.metrics import AdminMetrics
from controlplane.callbacks import CallbackFuncs
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store


@pytest.fixture
def metrics() -> AdminMetrics:
    return AdminMetrics()


@pytest.fixture
def manager(store: Store, metrics: AdminMetrics) -> StatefulRouteManager:
    # No view cache: every request sees what the previous one wrote. Failover events are
    # counted in the app's metrics, as server.py wires them.
    callbacks = CallbackFuncs(event_recorded=metrics.record_event)
    return StatefulRouteManager(store, view_ttl_s=0.0, callbacks=callbacks)


@pytest.fixture
def settings() -> AdminSettings:
    return AdminSettings(token=SecretStr(TOKEN), max_body_bytes=8192)


@pytest.fixture
async def api(
    aiohttp_client: AiohttpClient,
    manager: StatefulRouteManager,
    settings: AdminSettings,
    metrics: AdminMetrics,
) -> Client:
    """A client that sends the token with every request."""
    return await aiohttp_client(create_admin_app(manager, settings, metrics=metrics), headers=AUTH)


@pytest.fixture
async def anonymous(api: Client) -> AsyncIterator[ClientSession]:
    """A client of the same server that sends no token."""
    async with ClientSession(base_url=api.make_url("/")) as session:
        yield session
