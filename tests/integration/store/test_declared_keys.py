"""Every key a script touches is one it declares in KEYS, as Redis Cluster requires.

MONITOR shows each EVALSHA with its KEYS, followed by the commands the script ran ("lua"
client); each of those must name a declared key.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from controlplane.domain import Pod, ServiceKey
from controlplane.runtime.redis_server import RedisServer
from controlplane.store import Store, connect

SERVICE = ServiceKey("games", "lobby")
DONE = "declared-keys-done"


@pytest.fixture
async def monitored(
    redis_server: RedisServer,
) -> AsyncIterator[tuple[Store, Callable[[], Awaitable[list[str]]]]]:
    """A store on an empty single server, and how to get the script work it ran meanwhile."""
    store, watcher = Store(connect(redis_server.url)), connect(redis_server.url)
    await store.redis.flushdb()
    lines: list[str] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with watcher.monitor() as monitor:
            ready.set()
            async for entry in monitor.listen():
                if entry["command"] == f"ECHO {DONE}":
                    return
                if entry["command"].startswith("EVALSHA") or entry["client_type"] == "lua":
                    lines.append(entry["command"])

    async def seen() -> list[str]:
        await store.redis.echo(DONE)
        await task
        return lines

    task = asyncio.create_task(listen())
    await ready.wait()
    yield store, seen
    if not task.done():
        await seen()
    await store.close()
    await watcher.aclose()


def undeclared_keys(lines: list[str]) -> list[str]:
    declared: set[str] = set()
    found = []
    for line in lines:
        words = line.split(" ")
        if words[0] == "EVALSHA":
            declared = set(words[3 : 3 + int(words[2])])
        elif words[1] not in declared:  # every command the scripts run names a key first
            found.append(line)
    return found


async def test_binding_and_pod_scripts_touch_only_declared_keys(
    monitored: tuple[Store, Callable[[], Awaitable[list[str]]]],
) -> None:
    store, seen = monitored
    keys = store.keys(SERVICE)
    await store.bindings.bind_many(keys, [("a", 0), ("b", 1), ("c", 2)], now=1.0)
    await store.bindings.move(keys, ["a"], 1, now=2.0, only_from=0)
    await store.bindings.move(keys, ["b", "c", "new"], 3, now=3.0, only_from=None)
    await store.bindings.unbind(keys, "b")
    await store.bindings.expire_idle(keys, cutoff=10.0)
    await store.registry.put_pod(keys, Pod(index=0, host="127.0.0.1", port=9000))
    await store.registry.update_pod(keys, 0, lambda pod: (pod, None))
    lines = await seen()
    assert any(line.startswith("SREM") for line in lines)  # the monitor saw the scripts work
    assert undeclared_keys(lines) == []
