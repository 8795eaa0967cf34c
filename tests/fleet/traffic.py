"""Bound users asking through a fleet's Envoys, and what the Envoys hold, for the fleet tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from controlplane.runtime.stack import NAMESPACE, SERVICE, UID_HEADER
from controlplane.xds.scopes import user_key
from tests.support.fleet import Fleet
from tests.support.fleet.configs import POD_PORT


async def place(fleet: Fleet, uids: list[str], *gateways: str) -> dict[str, int]:
    """One request of each user through each of ``gateways`` (default: every one), so that
    each Envoy's replica knows the user; uid -> the pod that answered (the same everywhere)."""
    placed: dict[str, int] = {}
    for gateway in gateways or list(fleet.gateways):
        answers = await asyncio.gather(*(fleet.ask(gateway, uid) for uid in uids))
        assert all("pod" in a for a in answers), answers
        for answer in answers:
            assert placed.setdefault(answer["uid"], answer["pod"]) == answer["pod"], answer
    return placed


async def routed_by_every_envoy(fleet: Fleet, uids: list[str]) -> bool:
    """Whether every Envoy holds a scope of its own for each of ``uids``."""
    for gateway in fleet.gateways.values():
        dump = json.dumps(await gateway.envoy.config_dump("dynamic_scoped_route_configs"))
        if not all(json.dumps(user_key((UID_HEADER,), UID_HEADER, uid)) in dump for uid in uids):
            return False
    return True


async def serving_in(fleet: Fleet, gateway: str, pod: int) -> bool:
    """Whether the gateway's Envoy may send requests to ``pod``: in its EDS, healthy, not
    ejected."""
    address = fleet.pods[pod].host.address
    clusters = (await fleet.gateways[gateway].envoy.clusters())["cluster_statuses"]
    [service] = [c for c in clusters if c["name"] == f"{NAMESPACE}/{SERVICE}"]
    return any(
        host["address"]["socket_address"] == {"address": address, "port_value": POD_PORT}
        and host["health_status"].get("eds_health_status") == "HEALTHY"
        and not host["health_status"].get("failed_outlier_check")
        for host in service["host_statuses"]
    )


@dataclass
class Load:
    """Bound users asking through the given gateways, round after round, until ``stop()`` or
    ``max_rounds``. A request that fails, or lands on another pod than the user's, is counted
    (``failures``, by gateway and status or pod)."""

    fleet: Fleet
    placed: dict[str, int]
    gateways: list[str]
    max_rounds: int = 2000
    rounds: int = 0
    requests: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    _task: asyncio.Task[None] | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> Load:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stopping.set()
        assert self._task is not None
        await self._task

    async def until_rounds(self, more: int, timeout_s: float = 20.0) -> None:
        """Until ``more`` further rounds went through every gateway."""
        target = self.rounds + more
        async with asyncio.timeout(timeout_s):
            while self.rounds < target:
                assert self._task is not None
                if self._task.done():
                    await self._task  # raises what ended it, if anything did
                    raise AssertionError(f"the load stopped after {self.max_rounds} rounds")
                await asyncio.sleep(0.02)

    async def _run(self) -> None:
        while not self._stopping.is_set() and self.rounds < self.max_rounds:
            for gateway in list(self.gateways):
                await asyncio.gather(*(self._ask(gateway, uid) for uid in self.placed))
            self.rounds += 1

    async def _ask(self, gateway: str, uid: str) -> None:
        self.requests += 1
        answer: dict[str, object] = {"status": "no answer"}
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            answer = await self.fleet.ask(gateway, uid)
        if answer.get("pod") != self.placed[uid]:
            self.failures[f"{gateway}: {answer.get('status', answer.get('pod'))}"] += 1
