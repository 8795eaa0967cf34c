"""Helpers of the admin API tests: the service they use, the token, and assertions."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from controlplane.domain import Pod, Service, ServiceKey
from controlplane.manager import StatefulRouteManager

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAMESPACE, SERVICE = "games", "lobby"
BASE = f"/api/v1/services/{NAMESPACE}/{SERVICE}"

Client = TestClient[web.Request, web.Application]


async def given_service(manager: StatefulRouteManager, pods: int = 3) -> None:
    """games/lobby with pods 0..pods-1 on 10.0.0.<i>:8080, all healthy."""
    await manager.register_service(Service(namespace=NAMESPACE, name=SERVICE))
    for index in range(pods):
        await manager.upsert_pod(
            ServiceKey(NAMESPACE, SERVICE), Pod(index=index, host=f"10.0.0.{index}", port=8080)
        )


async def route(api: Client, uid: str) -> Any:
    response = await api.post(
        "/api/v1/route", json={"namespace": NAMESPACE, "service": SERVICE, "uid": uid}
    )
    return await expect(response, 200)


async def expect(response: ClientResponse, status: int, error: str | None = None) -> Any:
    """The JSON body of ``response`` once its status (and error code, if given) is checked."""
    body = await response.json() if response.content_type == "application/json" else {}
    assert response.status == status, body
    if error is not None:
        assert body["error"] == error, body
    return body
