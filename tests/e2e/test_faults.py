"""Faults under load: Redis away for 30 s, the control plane killed, Envoy restarted.

Each test runs a bounded load through Envoy while the fault happens and prints its figures.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from controlplane.domain import ServiceKey
from controlplane.runtime.stack import NAMESPACE, SERVICE, LocalStack
from controlplane.store import Store
from tests.support.redis_aof import written_to_aof

from .conftest import Client

pytestmark = [pytest.mark.envoy, pytest.mark.asyncio(loop_scope="module")]

REDIS_OUTAGE_S = 30.0


@dataclass
class Load:
    """Bound users asked round-robin and new users added every tick, until stopped."""

    client: Client
    bound: dict[str, int]
    new_prefix: str
    served: dict[str, set[int]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    last_failure: float = 0.0

    async def run(self, stop: asyncio.Event, workers: int = 8) -> None:
        users = iter(range(10**9))

        async def worker(n: int) -> None:
            while not stop.is_set():
                i = next(users)
                uid = (
                    f"{self.new_prefix}-{i}"
                    if i % 10 == 0
                    else list(self.bound)[i % len(self.bound)]
                )
                try:
                    answer = await self.client.ask(uid)
                    self.served.setdefault(uid, set()).add(answer["pod"])
                except (AssertionError, aiohttp.ClientError) as exc:
                    self.failures[type(exc).__name__] += 1
                    self.last_failure = time.monotonic()
                self.requests += 1
                await asyncio.sleep(0.01)

        await asyncio.gather(*(worker(n) for n in range(workers)))

    def moved(self) -> dict[str, set[int]]:
        """Bound users served by a pod other than their own."""
        return {u: p for u, p in self.served.items() if u in self.bound and p != {self.bound[u]}}


async def bound_users(client: Client, prefix: str, count: int = 100) -> dict[str, int]:
    answers = await asyncio.gather(*(client.ask(f"{prefix}-{i}") for i in range(count)))
    placed = {a["uid"]: a["pod"] for a in answers}
    await client.until(lambda: client.routed_by_envoy(list(placed)))
    return placed


def served_more(load: Load, requests: int) -> Callable[[], Awaitable[bool]]:
    """A check: ``load`` has served ``requests`` more than when this was called."""
    target = load.requests + requests

    async def check() -> bool:
        return load.requests >= target

    return check


def health_is(client: Client, expected: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        async with client.session.get(client.stack.admin_url + "/healthz") as response:
            return bool((await response.json())["status"] == expected)

    return check


async def test_redis_away_for_30_seconds_costs_no_request_and_no_binding(
    client: Client, stack: LocalStack
) -> None:
    assert stack.redis is not None
    placed = await bound_users(client, "redis-bound")
    redis_url = stack.redis.url
    await client.until(lambda: written_to_aof(redis_url))  # what kill -9 keeps
    load = Load(client, placed, "redis-new")
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    started = time.monotonic()
    stack.redis.kill()
    await client.until(health_is(client, "degraded"), timeout_s=5)
    await asyncio.sleep(REDIS_OUTAGE_S - (time.monotonic() - started))
    await asyncio.to_thread(stack.redis.start)
    recovery = await client.until(health_is(client, "ok"), timeout_s=10)
    stop.set()
    await running
    new_users = {u: p for u, p in load.served.items() if u.startswith("redis-new")}
    store = Store.from_url(stack.redis.url)
    keys = store.keys(ServiceKey(NAMESPACE, SERVICE))

    async def all_bound() -> bool:
        found = await store.bindings.lookup_many(keys, list(new_users))
        return None not in found

    await client.until(all_bound, timeout_s=10)
    forward = {uid: pod async for uid, pod in store.bindings.scan(keys)}
    reverse = {}
    for pod in range(4):
        async for uid in store.bindings.users_of(keys, pod):
            reverse[uid] = pod
    await store.close()
    print(
        f"\nredis outage {REDIS_OUTAGE_S:.0f}s: {load.requests} requests, "
        f"{sum(load.failures.values())} failed, {len(new_users)} new users, "
        f"healthz ok {recovery:.2f}s after redis restarted"
    )
    assert sum(load.failures.values()) == 0
    assert load.moved() == {}
    assert {u: forward[u] for u in placed} == placed  # 0 bindings lost
    assert all(forward[u] in pods for u, pods in new_users.items())
    assert forward == reverse


async def test_control_plane_kill_9_under_load_loses_no_route(
    client: Client, stack: LocalStack
) -> None:
    placed = await bound_users(client, "cp-kill")
    load = Load(client, placed, "cp-kill-new")
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    await client.until(served_more(load, 100))  # the load runs
    assert stack.controlplane is not None
    killed = time.monotonic()
    stack.controlplane.kill()
    # The fault is the control plane away while requests keep coming: counted in requests,
    # not seconds, so a slow machine cannot shrink it to nothing.
    await client.until(served_more(load, 500), timeout_s=30)
    await stack.start_controlplane()
    back = time.monotonic() - killed
    await client.until(client.envoy_connected, timeout_s=10)  # to the new control plane
    await client.until(served_more(load, 500), timeout_s=30)
    stop.set()
    await running
    print(
        f"\ncontrol plane kill -9: {load.requests} requests, "
        f"{sum(load.failures.values())} failed, admin back {back:.2f}s after the kill"
    )
    assert sum(load.failures.values()) == 0
    assert load.moved() == {}
    # The new control plane serves Envoy every bound user's scope again (pushes are paced).
    await client.until(lambda: client.routed_by_envoy(list(placed)), timeout_s=10)


async def test_a_restarted_envoy_has_its_users_routes_back_on_their_pods(
    client: Client, stack: LocalStack
) -> None:
    placed = await bound_users(client, "envoy-back")
    assert stack.envoy is not None
    await stack.envoy.stop()
    started = time.monotonic()
    await stack.envoy.start()
    await client.until(lambda: client.routed_by_envoy(list(placed)), every_s=0.01)
    took = time.monotonic() - started
    # How fast is a benchmark's business, not a test's: printed for whoever reads the log.
    print(f"\nenvoy restart: routes of {len(placed)} users back in {took:.3f}s")
    answers = await asyncio.gather(*(client.ask(uid) for uid in placed))
    assert {a["uid"]: a["pod"] for a in answers} == placed
