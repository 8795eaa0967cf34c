"""Users' scope changes reach Envoy in paced pushes: each push costs every Envoy a copy of its
scope index, however few scopes changed."""

from __future__ import annotations

import asyncio
import itertools

from controlplane.domain import ServiceKey
from controlplane.xds.cache import SnapshotKey
from controlplane.xds.config import XdsSettings
from controlplane.xds.resources import SourceKind
from controlplane.xds.server import XdsServer
from tests.support.state import MemoryStateSource, service_state

LOBBY = ServiceKey("games", "lobby")


async def pushes_while_users_arrive(settings: XdsSettings, bound: int) -> list[float]:
    """Times of the pushes while a user arrives every 5 ms for 0.3 s, ``bound`` users in."""
    source = MemoryStateSource([service_state("games", "lobby", [9000, 9001])])
    server = XdsServer(source, settings)
    await server.start()
    try:
        server.cache.snapshot(SnapshotKey("default", SourceKind.ADS))  # an Envoy asked
        source.route(LOBBY, {f"bound-{i}": i % 2 for i in range(bound)})
        await asyncio.sleep(0.2)  # that push is out
        loop = asyncio.get_running_loop()
        pushes: list[float] = []
        server.cache.watch(lambda: pushes.append(loop.time()))
        for i in range(60):
            source.route(LOBBY, {f"new-{i}": i % 2})
            await asyncio.sleep(0.005)
        return list(pushes)  # before stop(), which wakes the watchers once more
    finally:
        await server.stop()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_arrivals_within_an_interval_are_pushed_together() -> None:
    pushes = await pushes_while_users_arrive(XdsSettings(scope_push_min_interval_s=0.05), 10)
    assert 4 <= len(pushes) <= 8  # 60 arrivals over ~0.3 s
    assert min(gaps(pushes)) >= 0.049


async def test_the_interval_grows_with_the_scopes_envoy_holds() -> None:
    settings = XdsSettings(scope_push_min_interval_s=0.001, scope_push_cpu_share=0.05)
    few = await pushes_while_users_arrive(settings, 10)
    many = await pushes_while_users_arrive(settings, 100_000)
    assert min(gaps(few)) < 0.01
    # 100,000 scopes x 25 ns / 5%: a push per 50 ms at most.
    assert min(gaps(many)) >= 0.049
