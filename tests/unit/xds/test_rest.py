"""REST discovery over a real aiohttp server (no Envoy): errors, long-poll, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from controlplane.domain import ServiceState
from controlplane.runtime.ports import free_port
from controlplane.xds.config import XdsSettings
from controlplane.xds.envoy_version import MINIMUM_ENVOY
from controlplane.xds.naming import MISS_PATH_CLUSTER
from tests.support.state import MemoryStateSource, service_state
from tests.support.xds_stack import XdsStack

NODE = {"id": "e1", "cluster": "default"}


@pytest.fixture
async def stack() -> AsyncIterator[XdsStack]:
    source = MemoryStateSource([service_state("games", "lobby", [9000])])
    stack = await XdsStack(source, XdsSettings(long_poll_hold_s=0.3)).start()
    yield stack
    await stack.stop()


async def post(stack: XdsStack, kind: str, body: object) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{stack.rest_port}/v3/discovery:{kind}", data=data) as r,
    ):
        return r.status, await r.read()


async def test_malformed_bodies_get_400_with_a_message(stack: XdsStack) -> None:
    status, body = await post(stack, "clusters", b"{not json")
    assert status == 400
    assert b"malformed DiscoveryRequest" in body
    status, body = await post(stack, "clusters", {"node": NODE, "resource_names": "x"})
    assert status == 400
    assert b"resource_names" in body
    status, _ = await post(stack, "clusters", {"node": NODE, "type_url": "type.googleapis.com/x"})
    assert status == 400


async def test_a_stale_version_is_answered_at_once_and_resource_names_filter(
    stack: XdsStack,
) -> None:
    status, body = await post(stack, "endpoints", {"node": NODE, "resource_names": ["games/lobby"]})
    assert status == 200
    answer = json.loads(body)
    assert [r["clusterName"] for r in answer["resources"]] == ["games/lobby"]
    status, body = await post(stack, "endpoints", {"node": NODE, "resource_names": ["nope"]})
    assert json.loads(body)["resources"] == []


async def test_a_current_version_is_held_then_answered_304(stack: XdsStack) -> None:
    _, body = await post(stack, "clusters", {"node": NODE})
    version = json.loads(body)["version_info"]
    started = asyncio.get_running_loop().time()
    status, _ = await post(stack, "clusters", {"node": NODE, "version_info": version})
    assert status == 304
    assert asyncio.get_running_loop().time() - started >= 0.25


async def test_a_held_request_is_answered_when_its_resources_change(stack: XdsStack) -> None:
    _, body = await post(stack, "clusters", {"node": NODE})
    held = asyncio.create_task(
        post(stack, "clusters", {"node": NODE, "version_info": json.loads(body)["version_info"]})
    )
    await asyncio.sleep(0.05)
    source = stack.xds.source
    assert isinstance(source, MemoryStateSource)
    source.put(service_state("games", "chat", [9001]))
    status, body = await held
    assert status == 200
    names = {r["name"] for r in json.loads(body)["resources"]}
    assert names == {"games/lobby", "games/chat", MISS_PATH_CLUSTER}


async def test_shutdown_releases_held_requests() -> None:
    source = MemoryStateSource([service_state("games", "lobby", [9000])])
    stack = await XdsStack(source, XdsSettings(long_poll_hold_s=10.0)).start()
    try:
        _, body = await post(stack, "clusters", {"node": NODE})
        version = json.loads(body)["version_info"]
        held = asyncio.create_task(post(stack, "clusters", {"node": NODE, "version_info": version}))
        await asyncio.sleep(0.05)
        await stack.xds.stop()
        status, _ = await asyncio.wait_for(held, 1.0)
        assert status == 304
    finally:
        await stack.stop()


class SlowSource(MemoryStateSource):
    """A source whose first full load waits until released (a slow Redis at start-up)."""

    def __init__(self, states: list[ServiceState]) -> None:
        super().__init__(states)
        self.release = asyncio.Event()

    async def service_states(self) -> list[ServiceState]:
        await self.release.wait()
        return await super().service_states()


async def test_nothing_is_answered_before_the_state_is_loaded() -> None:
    source = SlowSource([service_state("games", "lobby", [9000])])
    stack = XdsStack(source)
    stack.rest_port = free_port()
    starting = asyncio.create_task(stack.start())
    await asyncio.sleep(0.2)
    # An answer now would come from the empty cache: every service gone, for a restarted plane.
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(stack, "clusters", {"node": NODE})
    source.release.set()
    await starting
    try:
        _, body = await post(stack, "clusters", {"node": NODE})
        assert "games/lobby" in {r["name"] for r in json.loads(body)["resources"]}
    finally:
        await stack.stop()


async def test_a_too_old_envoy_gets_400_naming_its_version_and_the_minimum(
    stack: XdsStack,
) -> None:
    old = {
        **NODE,
        "user_agent_name": "envoy",
        "user_agent_build_version": {"version": {"major_number": 1, "minor_number": 20}},
    }
    status, body = await post(stack, "clusters", {"node": old})
    assert status == 400
    assert b"Envoy 1.20.0 is older than" in body
    assert str(MINIMUM_ENVOY).encode() in body
