"""Active health checks against real HTTP pods feed the state machine and trigger failover."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from controlplane.domain import (
    FailoverType,
    HealthCheckSettings,
    Pod,
    PodState,
    RouteRequest,
    Service,
    ServiceKey,
    ServiceSettings,
)
from controlplane.manager import StatefulRouteManager
from controlplane.runtime.ports import free_port
from controlplane.signals.active_health import ActiveHealthChecker
from controlplane.store import Store

KEY = ServiceKey("games", "lobby")


class FakePod:
    """A real HTTP server whose /health answer the test switches."""

    def __init__(self) -> None:
        self.status = 200
        self.port = free_port()
        app = web.Application()
        app.router.add_get("/health", self.health)
        self.runner = web.AppRunner(app)

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=self.status)

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


@pytest.fixture
async def pods() -> AsyncIterator[list[FakePod]]:
    pods = [FakePod() for _ in range(3)]
    for pod in pods:
        await pod.start()
    yield pods
    for pod in pods:
        await pod.runner.cleanup()


async def test_a_pod_failing_its_checks_loses_its_users_and_comes_back_when_healthy(
    store: Store, pods: list[FakePod]
) -> None:
    manager = StatefulRouteManager(store)
    checks = HealthCheckSettings(timeout_s=1, unhealthy_threshold=2, healthy_threshold=2)
    settings = ServiceSettings(health_check=checks)
    await manager.register_service(
        Service(namespace=KEY.namespace, name=KEY.name, settings=settings)
    )
    for index, pod in enumerate(pods):
        await manager.upsert_pod(KEY, Pod(index=index, host="127.0.0.1", port=pod.port))
    for i in range(60):
        await manager.route_request(
            RouteRequest(namespace=KEY.namespace, service=KEY.name, uid=f"u{i}")
        )
    checker = ActiveHealthChecker(manager)
    await checker.start()
    try:
        pods[1].status = 503
        await checker.check_service(KEY)
        await checker.check_service(KEY)
        status = await manager.get_service_load_status(KEY)
        assert status[1].state is PodState.DOWN
        assert status[1].bound_users == 0
        assert sum(s.bound_users for s in status.values()) == 60

        pods[1].status = 200
        await checker.check_service(KEY)
        await checker.check_service(KEY)
        status = await manager.get_service_load_status(KEY)
        assert status[1].state is PodState.HEALTHY
        assert status[0].response_time_ms > 0
    finally:
        await checker.stop()
        await manager.close()
    kinds = [e.type for e in await manager.get_failover_history(KEY)]
    assert kinds == [FailoverType.POD_RECOVERY, FailoverType.POD_FAILURE]


async def test_a_pod_that_does_not_listen_fails_its_checks(store: Store) -> None:
    manager = StatefulRouteManager(store)
    checks = HealthCheckSettings(timeout_s=1, unhealthy_threshold=1)
    await manager.register_service(
        Service(
            namespace=KEY.namespace, name=KEY.name, settings=ServiceSettings(health_check=checks)
        )
    )
    await manager.upsert_pod(KEY, Pod(index=0, host="127.0.0.1", port=free_port()))
    checker = ActiveHealthChecker(manager)
    await checker.start()
    try:
        await checker.check_service(KEY)
    finally:
        await checker.stop()
        await manager.close()
    status = await manager.get_service_load_status(KEY)
    assert status[0].state is PodState.DOWN
    assert "health check failed" in status[0].reason
