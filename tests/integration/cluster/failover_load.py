"""A bounded load of route_request calls through the kill -9 of the Redis primary.

Workers bind new users and look up users bound before the kill, each call bounded in time.
The report says how many calls failed, how long the store took to answer again, and how many
acknowledged bindings the failover lost (async replication: what the replica had not
received when its primary died).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from controlplane.domain import Pod, RouteRequest, Service, ServiceKey
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store

NS, SVC = "games", "lobby"
KEY = ServiceKey(NS, SVC)
CALL_TIMEOUT_S = 2.0
STABLE_FOR_S = 1.0  # recovered: this long without a failed call


@dataclass
class FailoverReport:
    requests: int = 0
    failed: int = 0
    recovery_s: float = 0.0  # from the kill to the end of the last failed call
    acknowledged: dict[str, int] = field(default_factory=dict)  # uid -> pod we were told
    lost: list[str] = field(default_factory=list)  # acknowledged, but gone or elsewhere now

    def line(self, topology: str) -> str:
        return (
            f"failover topology={topology} requests={self.requests} failed={self.failed} "
            f"recovery_s={self.recovery_s:.2f} acknowledged={len(self.acknowledged)} "
            f"lost={len(self.lost)}"
        )


async def registered(store: Store, pods: int = 4) -> StatefulRouteManager:
    manager = StatefulRouteManager(store, view_ttl_s=0.5)
    await manager.register_service(Service(namespace=NS, name=SVC))
    for index in range(pods):
        await manager.upsert_pod(KEY, Pod(index=index, host="127.0.0.1", port=9000 + index))
    return manager


async def route_through_failover(
    manager: StatefulRouteManager,
    kill: Callable[[], None],
    *,
    workers: int = 16,
    warm_up_s: float = 0.5,
    deadline_s: float = 20.0,
) -> FailoverReport:
    """Load, kill the primary (in a thread: it waits for the process), load until stable."""
    report = FailoverReport()
    prebound = [f"old{i}" for i in range(200)]
    for uid in prebound:
        result = await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid=uid))
        report.acknowledged[uid] = result.pod_index
    fresh = (f"new{i}" for i in itertools.count())
    started = time.monotonic()
    killed_at: float | None = None
    last_failure = 0.0

    async def call(uid: str) -> None:
        nonlocal last_failure
        report.requests += 1
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                result = await manager.route_request(
                    RouteRequest(namespace=NS, service=SVC, uid=uid)
                )
        except Exception:  # any failure of the store counts; the load goes on
            result = None
        if result is None or result.degraded:
            # The store did not answer (a degraded answer is the manager's no-Redis fallback):
            # what this measures is how long the store itself was away.
            report.failed += 1
            last_failure = time.monotonic()
            await asyncio.sleep(0.01)  # a real client would back off too
            return
        if uid not in report.acknowledged:
            report.acknowledged[uid] = result.pod_index
        elif report.acknowledged[uid] != result.pod_index:
            report.lost.append(uid)  # its binding vanished and it was placed afresh

    def done() -> bool:
        now = time.monotonic()
        if now - started > deadline_s:
            return True
        return killed_at is not None and now - max(killed_at, last_failure) > STABLE_FOR_S

    async def worker(n: int) -> None:
        for i in itertools.count():
            if done():
                return
            await call(prebound[(n * 31 + i) % len(prebound)] if i % 2 else next(fresh))

    async def killer() -> None:
        nonlocal killed_at
        await asyncio.sleep(warm_up_s)
        killed_at = time.monotonic()
        await asyncio.to_thread(kill)

    await asyncio.gather(killer(), *(worker(n) for n in range(workers)))
    assert killed_at is not None
    report.recovery_s = max(0.0, last_failure - killed_at)
    await report_lost(manager.store, report)
    return report


async def report_lost(store: Store, report: FailoverReport) -> None:
    uids = list(report.acknowledged)
    now = await store.bindings.lookup_many(store.keys(KEY), uids)
    gone = {uid for uid, pod in zip(uids, now, strict=True) if pod != report.acknowledged[uid]}
    report.lost = sorted(gone | set(report.lost))
