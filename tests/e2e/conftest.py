"""One whole local stack (Redis, control plane, 4 demo pods, Envoy) per test module."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest_asyncio

from controlplane.runtime.stack import NAMESPACE, SERVICE, UID_HEADER, LocalStack, StackConfig
from controlplane.xds.scopes import user_key

SERVICE_PATH = f"/api/v1/services/{NAMESPACE}/{SERVICE}"


class Client:
    """Requests through Envoy, and calls to the admin API with the stack's token."""

    def __init__(self, stack: LocalStack, session: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.session = session

    async def ask(self, uid: str, **headers: str) -> dict[str, Any]:
        """One request of ``uid`` through Envoy; the pod's JSON answer."""
        async with self.session.get(
            self.stack.proxy_url + "/", headers={UID_HEADER: uid, **headers}
        ) as response:
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = await response.json()
            return answer

    async def admin(self, method: str, path: str, body: object = None) -> Any:
        headers = {"Authorization": f"Bearer {self.stack.token}"}
        async with self.session.request(
            method, self.stack.admin_url + path, json=body, headers=headers
        ) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def pod_of(self, uid: str) -> int:
        binding = await self.admin("GET", f"{SERVICE_PATH}/users/{uid}")
        pod: int = binding["pod"]
        return pod

    async def pods(self) -> dict[int, dict[str, Any]]:
        return {p["pod_index"]: p for p in await self.admin("GET", f"{SERVICE_PATH}/pods")}

    async def envoy_connected(self) -> bool:
        """Whether an Envoy is connected to the control plane's xDS server."""
        return bool(await self.admin("GET", "/api/v1/envoys"))

    async def envoy_in_sync(self) -> bool:
        """Whether an Envoy is connected and has ACKed what the control plane serves now
        (never true for long while new users keep arriving: use ``envoy_connected`` then)."""
        envoys = await self.admin("GET", "/api/v1/envoys")
        return bool(envoys) and all(envoy["up_to_date"] for envoy in envoys)

    async def routed_by_envoy(self, uids: list[str]) -> bool:
        """Whether Envoy holds a scope for every one of ``uids``."""
        assert self.stack.envoy is not None
        dump = json.dumps(await self.stack.envoy.config_dump("dynamic_scoped_route_configs"))
        return all(json.dumps(user_key(("x-uid",), "x-uid", uid)) in dump for uid in uids)

    async def until(self, check: Any, timeout_s: float = 5.0, every_s: float = 0.05) -> float:
        """Poll ``await check()`` until truthy; returns the seconds it took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not await check():
            if loop.time() - started > timeout_s:
                raise TimeoutError(f"not true within {timeout_s}s")
            await asyncio.sleep(every_s)
        return loop.time() - started


async def served_in_the_end(client: Client, uid: str, within_s: float = 10.0) -> int:
    """The pod that answers ``uid``, asked until it answered three times (within ``within_s``:
    a request fails while the user's failed pod is detected and its scope re-pointed): every
    answer must come from the same pod."""
    pods = []
    deadline = asyncio.get_running_loop().time() + within_s
    while len(pods) < 3 and asyncio.get_running_loop().time() < deadline:
        try:
            pods.append((await client.ask(uid))["pod"])
        except AssertionError:
            await asyncio.sleep(0.05)  # a client's back-off while the user's scope travels
    assert len(set(pods)) == 1, (uid, pods)
    return int(pods[0])


@dataclass(frozen=True)
class Kill:
    """A pod killed while its users kept asking: who they were and how long things took."""

    victim: int
    victims: list[str]
    detected_s: float  # kill -> the control plane holds the pod in the state waited for
    rebound_s: float  # kill -> every one of its users bound elsewhere


async def kill_while_asked(
    client: Client, stack: LocalStack, prefix: str, users: int, state: str
) -> Kill:
    """Place ``users`` users, kill -9 the first one's pod while its users keep asking, and
    wait until the control plane holds that pod ``state`` and has moved its users."""
    uids = [f"{prefix}-{i}" for i in range(users)]
    placed = {uid: (await client.ask(uid))["pod"] for uid in uids}
    victim = placed[uids[0]]
    victims = [uid for uid, pod in placed.items() if pod == victim]
    stop = asyncio.Event()
    asking = asyncio.create_task(keep_asking(client, victims, stop))
    stack.pods[victim].kill()
    killed = time.monotonic()
    try:

        async def in_state() -> bool:
            return (await client.pods())[victim]["state"] == state

        await client.until(in_state, timeout_s=10.0, every_s=0.02)
        detected = time.monotonic() - killed

        async def moved() -> bool:
            return victim not in [await client.pod_of(uid) for uid in victims]

        await client.until(moved, timeout_s=10.0)
        rebound = time.monotonic() - killed
    finally:
        stop.set()
        await asking
    return Kill(victim, victims, detected, rebound)


async def keep_asking(client: Client, uids: list[str], stop: asyncio.Event) -> None:
    """The users' requests, failed or not, until ``stop`` (bounded: at most 60 s)."""
    deadline = time.monotonic() + 60.0
    while not stop.is_set() and time.monotonic() < deadline:
        for uid in uids:
            with contextlib.suppress(AssertionError, aiohttp.ClientError):
                await client.ask(uid)
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[LocalStack]:
    stack = await LocalStack(StackConfig(pods=4)).start()
    yield stack
    await stack.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(stack: LocalStack) -> AsyncIterator[Client]:
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Client(stack, session)
