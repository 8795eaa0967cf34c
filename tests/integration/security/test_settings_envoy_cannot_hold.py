"""Service settings Envoy cannot hold must be refused at the edge, not break xDS later.

KNOWN BUGS (strict xfail: they turn red once fixed, so the marks come off): the domain's
settings models (controlplane/domain/envoy_settings.py, models.py) bound no duration from above,
no uint32 field by 2**32-1, and not the control plane's own health-check path, so the admin API
answers 200 to each of these. A route timeout of 1e308 s then makes every REST discovery
request of the node group a 500 (timedelta overflow while rendering routes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from controlplane.xds.config import XdsSettings
from tests.integration.security.conftest import AUTH, NAMESPACE, SERVICE, AdminServer
from tests.support.state import MemoryStateSource, service_state
from tests.support.xds_stack import XdsStack

UNHOLDABLE: dict[str, dict[str, Any]] = {
    "route timeout 1e308 s": {"envoy": {"route_timeout_s": 1e308}},
    "connect timeout past protobuf Duration": {"envoy": {"connect_timeout_s": 1e12}},
    "circuit breaker over uint32": {"envoy": {"circuit_breakers": {"max_connections": 2**40}}},
    "outlier threshold over uint32": {"envoy": {"outlier_detection": {"consecutive_5xx": 2**33}}},
    "health-check path that changes the host": {"health_check": {"path": "@evil.example/x"}},
    "health-check path with CR/LF": {"health_check": {"path": "/h\r\nx-injected: 1"}},
}


@pytest.mark.xfail(strict=True, reason="domain settings are unbounded (see module docstring)")
@pytest.mark.parametrize("settings", UNHOLDABLE.values(), ids=UNHOLDABLE.keys())
async def test_the_admin_api_refuses_settings_envoy_cannot_hold(
    admin_server: AdminServer, settings: dict[str, Any]
) -> None:
    async with (
        aiohttp.ClientSession(admin_server.url, headers=AUTH) as session,
        session.put(f"/api/v1/services/{NAMESPACE}/{SERVICE}", json=settings) as response,
    ):
        assert response.status == 422, await response.text()


@pytest.fixture
async def stack() -> AsyncIterator[XdsStack]:
    source = MemoryStateSource([service_state("games", "lobby", [9000])])
    stack = await XdsStack(source, XdsSettings(long_poll_hold_s=0.1)).start()
    yield stack
    await stack.stop()


@pytest.mark.xfail(strict=True, reason="route_timeout_s is unbounded: timedelta overflow -> 500")
async def test_one_service_with_a_huge_route_timeout_does_not_break_discovery(
    stack: XdsStack,
) -> None:
    source = stack.xds.source
    assert isinstance(source, MemoryStateSource)
    source.put(service_state("games", "bad", [9001], envoy={"route_timeout_s": 1e308}))
    await asyncio.sleep(0.2)  # past the debounce: the snapshot holds it
    node = json.dumps({"node": {"id": "e1", "cluster": "default"}}).encode()
    async with aiohttp.ClientSession() as session:
        for kind in ("clusters", "endpoints", "listeners", "routes"):
            url = f"http://127.0.0.1:{stack.rest_port}/v3/discovery:{kind}"
            async with session.post(url, data=node) as response:
                assert response.status < 500, kind
