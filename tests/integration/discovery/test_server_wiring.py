"""The control-plane process with pods by name: its config file's names are resolved at start,
and a pod's failure sends its name to be resolved again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane.admin.models import PodSpec
from controlplane.domain import ServiceKey
from controlplane.runtime.ports import free_port
from controlplane.runtime.redis_server import RedisServer
from controlplane.server import Server
from controlplane.settings import ListenSettings, ServiceConfig, Settings, UpkeepSettings
from controlplane.store.config import RedisSettings

KEY = ServiceKey("games", "lobby")


@pytest.fixture
async def server(redis_server: RedisServer) -> AsyncIterator[Server]:
    settings = Settings(
        redis=RedisSettings(url=redis_server.url),
        listen=ListenSettings(admin_port=0, xds_rest_port=0, xds_grpc_port=0),
        upkeep=UpkeepSettings(health_checks=False),
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
