"""Two control-plane replicas on one Redis: consistent answers, one leader, one failover."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from controlplane.runtime.ports import free_port
from controlplane.runtime.redis_server import RedisServer
from controlplane.runtime.stack import ManagedProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "replica-test-token-0123456789"
SERVICE = "/api/v1/services/demo/echo"
LEASE_S = 1.5


class Replica:
    def __init__(self, name: str, redis_url: str, workdir: Path, pods: list[int]) -> None:
        self.admin_port = free_port()
        settings: dict[str, Any] = {
            "redis": {"url": redis_url},
            "listen": {"admin_port": self.admin_port, "xds_rest_port": free_port(),
                       "xds_grpc_port": free_port()},
            "admin": {"token": TOKEN},
            # No pods listen here: the leader's own probes would fail them all.
            "upkeep": {"health_checks": False, "leader_lease_s": LEASE_S,
                       "reconcile_every_s": 0.2},
            "services": [{"namespace": "demo", "name": "echo",
                          "pods": [{"index": i, "host": "127.0.0.1", "port": p}
                                   for i, p in enumerate(pods)]}],
        }  # fmt: skip
        config = workdir / f"{name}.yaml"
        config.write_text(yaml.safe_dump(settings))
        self.process = ManagedProcess(
            name,
            [sys.executable, "-m", "controlplane.cli", "serve", "--config", str(config)],
            workdir / f"{name}.log",
        )
        self.url = f"http://127.0.0.1:{self.admin_port}"

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.process.start()
        for _ in range(200):
            try:
                async with http.get(self.url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise TimeoutError(self.process.log_tail())

    async def call(
        self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.request(method, self.url + path, json=body, headers=headers) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def leader(self, http: aiohttp.ClientSession) -> bool:
        try:
            return bool((await self.call(http, "GET", "/healthz"))["leader"])
        except aiohttp.ClientError:
            return False


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Replica, Replica, aiohttp.ClientSession]]:
    workdir = tmp_path_factory.mktemp("replicas")
    pods = [free_port() for _ in range(4)]
    with RedisServer() as redis:
        one = Replica("one", redis.url, workdir, pods)
        two = Replica("two", redis.url, workdir, pods)
        async with aiohttp.ClientSession() as http:
            await one.start(http)
            await two.start(http)
            yield one, two, http
            for replica in (one, two):
                await replica.process.stop()


async def route(replica: Replica, http: aiohttp.ClientSession, uid: str) -> int:
    body = {"namespace": "demo", "service": "echo", "uid": uid}
    pod: int = (await replica.call(http, "POST", "/api/v1/route", body))["pod_index"]
    return pod


async def test_both_replicas_give_the_same_answer_for_the_same_user(replicas: Any) -> None:
    one, two, http = replicas
    answers = await asyncio.gather(
        *(route(r, http, f"same-{i}") for i in range(100) for r in (one, two))
    )
    assert all(answers[i] == answers[i + 1] for i in range(0, len(answers), 2))


async def test_exactly_one_replica_leads(replicas: Any) -> None:
    one, two, http = replicas
    assert [await one.leader(http), await two.leader(http)].count(True) == 1


async def test_a_failure_seen_by_a_follower_moves_each_user_once(replicas: Any) -> None:
    one, two, http = replicas
    leader, follower = (one, two) if await one.leader(http) else (two, one)
    placed = {f"fail-{i}": await route(follower, http, f"fail-{i}") for i in range(200)}
    failed = placed["fail-0"]
    pods = await follower.call(http, "GET", f"{SERVICE}/pods")
    on_failed = next(p["bound_users"] for p in pods if p["pod_index"] == failed)
    await follower.call(http, "POST", f"{SERVICE}/pods/{failed}/fail", {"reason": "test"})
    started = time.monotonic()
    while True:
        pods = await leader.call(http, "GET", f"{SERVICE}/pods")
        if next(p["bound_users"] for p in pods if p["pod_index"] == failed) == 0:
            break
        assert time.monotonic() - started < 2, "the leader did not move the users"
        await asyncio.sleep(0.05)
    events = await leader.call(http, "GET", f"{SERVICE}/failovers")
    failures = [e for e in events if e["type"] == "POD_FAILURE" and e["pod"] == failed]
    assert len(failures) == 1
    assert failures[0]["affected_users"] == on_failed
    victims = [uid for uid, pod in placed.items() if pod == failed]
    assert victims
    for uid in victims:
        assert await route(one, http, uid) == await route(two, http, uid) != failed
    await leader.call(http, "POST", f"{SERVICE}/pods/{failed}/recover", {})


async def test_a_killed_leader_is_replaced_within_one_lease_period(replicas: Any) -> None:
    one, two, http = replicas
    leader, follower = (one, two) if await one.leader(http) else (two, one)
    leader.process.kill()
    killed = time.monotonic()
    while not await follower.leader(http):
        assert time.monotonic() - killed < LEASE_S + 1.0
        await asyncio.sleep(0.05)
    took = time.monotonic() - killed
    print(f"\nleader handover after kill -9: {took:.2f}s (lease {LEASE_S}s)")
    assert took <= LEASE_S + 0.6  # the lease, plus at most one renewal interval of the new one
    await leader.start(http)
    assert not await leader.leader(http)  # the old leader comes back as a follower
