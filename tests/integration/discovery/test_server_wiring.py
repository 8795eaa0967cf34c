"""The control-plane process with pods by name: its config file's names are resolved at start,
a pod's failure sends its name to be resolved again, and the leader looks for lapsed leases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane.admin.models import PodSpec
from controlplane.discovery.config import DiscoverySettings
from controlplane.domain import Pod, PodState, ServiceKey
from controlplane.runtime.ports import free_port
from controlplane.runtime.redis_server import RedisServer
from controlplane.server import Server
from controlplane.settings import ListenSettings, ServiceConfig, Settings, UpkeepSettings
from controlplane.store.config import RedisSettings
from tests.support.waiting import eventually

KEY = ServiceKey("games", "lobby")


@pytest.fixture
async def server(redis_server: RedisServer) -> AsyncIterator[Server]:
    settings = Settings(
        redis=RedisSettings(url=redis_server.url),
        listen=ListenSettings(admin_port=0, xds_rest_port=0, xds_grpc_port=0),
        upkeep=UpkeepSettings(health_checks=False),
        discovery=DiscoverySettings(lease_check_every_s=0.05),
        services=[
            ServiceConfig(
                namespace=KEY.namespace,
                name=KEY.name,
                pods=[PodSpec(index=i, name="localhost", port=free_port()) for i in range(2)],
            )
        ],
    )
    server = Server(settings)
    await server.store.redis.flushdb()
    await server.start()
    yield server
    await server.stop()


async def test_pods_named_in_the_config_file_are_registered_at_their_addresses(
    server: Server,
) -> None:
    status = await server.manager.get_service_load_status(KEY)
    ports = [spec.port for spec in server.settings.services[0].pods]
    assert [(s.name, s.address) for s in status.values()] == [
        ("localhost", f"127.0.0.1:{port}") for port in ports
    ]


async def test_a_failed_pod_is_sent_to_be_resolved_again(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[tuple[ServiceKey, int]] = []
    monkeypatch.setattr(server.names, "pod_failed", lambda key, i: reported.append((key, i)))
    await server.manager.handle_pod_failure(KEY, 1, "test")
    assert reported == [(KEY, 1)]


async def test_the_leader_drains_a_pod_whose_lease_lapsed(server: Server) -> None:
    pod = Pod(index=5, host="127.0.0.1", port=free_port())
    await server.manager.leases.register(KEY, pod, ttl_s=0.2)

    async def drained() -> bool:
        pods = {p.index: p for p in await server.manager.pods(KEY)}
        return pods[5].state is PodState.DRAINING

    await eventually(drained, "pod 5 drained after its lease lapsed", within_s=5.0)
