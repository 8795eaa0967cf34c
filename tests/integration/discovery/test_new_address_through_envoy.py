"""A pod found by name moves to a new address, through a real Envoy: the control plane
(in-process, the ``serve`` assembly) resolves the name again and pushes the new endpoint, and
the pod's bound users reach it there, still bound to the same index, with no failover.

The pod is "rescheduled" the way an orchestrator rolls it: a new process at a new address
(127.0.0.2, another loopback address) under the same name, then the old one stops. Names are
answered by a StaticResolver the test switches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controlplane.admin.models import PodSpec
from controlplane.discovery.config import DiscoverySettings
from controlplane.domain import ServiceKey, ServiceSettings
from controlplane.runtime.demo_pod import UID_HEADER, DemoPod
from controlplane.runtime.envoy import EnvoyProcess, bundled_bootstrap, load_bootstrap
from controlplane.runtime.ports import free_port
from controlplane.runtime.redis_server import RedisServer
from controlplane.server import Server
from controlplane.settings import ListenSettings, ServiceConfig, Settings, UpkeepSettings
from controlplane.store.config import RedisSettings
from controlplane.xds.config import NodeGroupSettings, XdsSettings
from tests.support.resolver import StaticResolver
from tests.support.waiting import eventually

pytestmark = pytest.mark.envoy

KEY = ServiceKey("demo", "echo")
NEW_HOST = "127.0.0.2"


@dataclass
class RunningPod:
    pod: DemoPod
    runner: web.AppRunner

    @classmethod
    async def start(cls, index: int, host: str, port: int) -> RunningPod:
        pod = DemoPod(index)
        runner = web.AppRunner(pod.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return cls(pod, runner)


@dataclass
class Stack:
    server: Server
    resolver: StaticResolver
    pods: dict[int, RunningPod]
    ports: list[int]
    proxy_port: int
    session: aiohttp.ClientSession

    async def ask(self, uid: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.proxy_port}/"
        async with self.session.get(url, headers={UID_HEADER: uid}) as response:
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = await response.json()
            return answer


@pytest.fixture
async def stack(redis_server: RedisServer) -> AsyncIterator[Stack]:
    ports, proxy_port = [free_port() for _ in range(2)], free_port()
    pods = {i: await RunningPod.start(i, "127.0.0.1", port) for i, port in enumerate(ports)}
    resolver = StaticResolver({f"pod-{i}": ("127.0.0.1",) for i in range(2)})
    settings = Settings(
        redis=RedisSettings(url=redis_server.url),
        listen=ListenSettings(admin_port=0, xds_rest_port=free_port(), xds_grpc_port=free_port()),
        xds=XdsSettings(default_group=NodeGroupSettings(listener_port=proxy_port)),
        upkeep=UpkeepSettings(health_checks=False),
        discovery=DiscoverySettings(resolve_every_s=0.2),
        services=[
            ServiceConfig(
                namespace=KEY.namespace,
                name=KEY.name,
                settings=ServiceSettings(domains=["*"]),
                pods=[PodSpec(name=f"pod-{i}", port=port) for i, port in enumerate(ports)],
            )
        ],
    )
    server = Server(settings, resolver=resolver)
    await server.store.redis.flushdb()
    await server.start()
    bootstrap = load_bootstrap(
        bundled_bootstrap("delta"),
        xds_port=settings.listen.xds_grpc_port,
        node_id="envoy-names",
        node_cluster="default",
    )
    envoy = await EnvoyProcess(bootstrap).start()
    session = aiohttp.ClientSession()
    try:
        yield Stack(server, resolver, pods, ports, proxy_port, session)
    finally:
        await session.close()
        await envoy.close()
        await server.stop()
        for running in pods.values():
            await running.runner.cleanup()


async def test_a_pod_at_a_new_address_keeps_its_users_and_envoy_follows_it(stack: Stack) -> None:
    async def placed(uid: str) -> int | None:
        try:
            return int((await stack.ask(uid))["pod"])
        except (aiohttp.ClientError, AssertionError):
            return None

    await eventually(lambda: placed("probe"), "Envoy routes to the pods", within_s=20.0)
    pods = {f"user-{n}": await placed(f"user-{n}") for n in range(20)}
    on_one = [uid for uid, pod in pods.items() if pod == 1]
    assert on_one, pods

    # Rescheduled: a new pod-1 process at a new address, its name now answering that.
    moved = await RunningPod.start(1, NEW_HOST, stack.ports[1])
    old = stack.pods[1]
    stack.pods[1] = moved
    stack.resolver.names["pod-1"] = (NEW_HOST,)

    async def at_new_address() -> bool:
        pod = {p.index: p for p in await stack.server.manager.pods(KEY)}[1]
        return pod.host == NEW_HOST

    await eventually(at_new_address, "pod 1 moved to its new address", within_s=5.0)

    async def served_at_new_address() -> bool:
        moved.pod.counts.clear()
        answers = [await stack.ask(uid) for uid in on_one]
        return all(a["pod"] == 1 for a in answers) and set(moved.pod.counts) == set(on_one)

    await eventually(served_at_new_address, "Envoy sends pod 1's users to its new address")
    await old.runner.cleanup()  # the old process goes: nothing of pod 1 depends on it
    assert await served_at_new_address()
    for uid in on_one:  # bound to the index, not the address: nobody moved
        binding = await stack.server.manager.get_binding(KEY, uid)
        assert binding.pod == 1
    assert await stack.server.manager.get_failover_history(KEY) == []
