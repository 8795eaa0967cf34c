"""Service settings Envoy cannot hold are refused at the edge, never break xDS later.

Durations are bounded, uint32 fields stop at 2**32-1, and the control plane's own health-check
path cannot name another host or carry a header.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from controlplane.domain import Service, parse
from controlplane.errors import InvalidInput
from tests.integration.security.conftest import AUTH, NAMESPACE, SERVICE, AdminServer

UNHOLDABLE: dict[str, dict[str, Any]] = {
    "route timeout 1e308 s": {"envoy": {"route_timeout_s": 1e308}},
    "connect timeout past protobuf Duration": {"envoy": {"connect_timeout_s": 1e12}},
    "circuit breaker over uint32": {"envoy": {"circuit_breakers": {"max_connections": 2**40}}},
    "outlier threshold over uint32": {"envoy": {"outlier_detection": {"consecutive_5xx": 2**33}}},
    "health-check path that changes the host": {"health_check": {"path": "@evil.example/x"}},
    "health-check path with CR/LF": {"health_check": {"path": "/h\r\nx-injected: 1"}},
}


@pytest.mark.parametrize("settings", UNHOLDABLE.values(), ids=UNHOLDABLE.keys())
async def test_the_admin_api_refuses_settings_envoy_cannot_hold(
    admin_server: AdminServer, settings: dict[str, Any]
) -> None:
    async with (
        aiohttp.ClientSession(admin_server.url, headers=AUTH) as session,
        session.put(f"/api/v1/services/{NAMESPACE}/{SERVICE}", json=settings) as response,
    ):
        assert response.status == 422, await response.text()


@pytest.mark.parametrize("settings", UNHOLDABLE.values(), ids=UNHOLDABLE.keys())
def test_such_a_service_cannot_even_be_built(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        parse(Service, {"namespace": "games", "name": "bad", "settings": settings})
