"""One control plane and one Envoy per transport, shared by the tests of a module."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from controlplane.runtime.envoy import EnvoyProcess, load_bootstrap
from controlplane.runtime.ports import free_port
from controlplane.xds.clients import Transport
from controlplane.xds.config import NodeGroupSettings, XdsSettings
from tests.support.state import MemoryStateSource
from tests.support.upstream import Upstreams
from tests.support.xds_stack import XdsStack

ENVOY_DIR = Path(__file__).parents[3] / "envoy"


@dataclass
class Plane:
    transport: Transport
    source: MemoryStateSource
    stack: XdsStack
    envoy: EnvoyProcess
    upstreams: Upstreams
    listener_port: int
    blue_listener_port: int

    def envoy_for(self, node_cluster: str = "default") -> EnvoyProcess:
        return make_envoy(self.transport, self.stack, node_cluster)


def make_envoy(
    transport: Transport, stack: XdsStack, node_cluster: str = "default"
) -> EnvoyProcess:
    """A new (not started) Envoy speaking ``transport`` to ``stack``, in group ``node_cluster``."""
    port = stack.rest_port if transport is Transport.REST else stack.grpc_port
    config = load_bootstrap(
        ENVOY_DIR / f"{transport}.yaml",
        xds_port=port,
        node_id=f"envoy-{transport}-{node_cluster}",
        node_cluster=node_cluster,
    )
    return EnvoyProcess(config)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=list(Transport))
async def plane(request: pytest.FixtureRequest) -> AsyncIterator[Plane]:
    upstreams = await Upstreams(3).start()
    listener_port, blue_port = free_port(), free_port()
    settings = XdsSettings(
        default_group=NodeGroupSettings(listener_port=listener_port),
        node_groups={
            "blue": NodeGroupSettings(listener_port=blue_port, namespaces=frozenset({"blue"}))
        },
    )
    source = MemoryStateSource()
    stack = await XdsStack(source, settings).start()
    envoy = make_envoy(request.param, stack)
    try:
        await envoy.start()
        yield Plane(request.param, source, stack, envoy, upstreams, listener_port, blue_port)
    finally:
        await envoy.close()
        await stack.stop()
        await upstreams.stop()


async def eventually(
    probe: Callable[[], Awaitable[Any]], within_s: float = 5.0, interval: float = 0.01
) -> Any:
    """Await ``probe`` until it returns something truthy; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within_s}s (last: {result!r})")
        await asyncio.sleep(interval)


def hosts(clusters: dict[str, Any], name: str) -> dict[int, dict[str, Any]]:
    """A cluster's hosts from /clusters?format=json, by port."""
    for cluster in clusters.get("cluster_statuses", []):
        if cluster["name"] == name:
            return {
                h["address"]["socket_address"]["port_value"]: h
                for h in cluster.get("host_statuses", [])
            }
    return {}
