"""Scale: one arrival among many users in the control plane, and 1,000 pods.

- One arrival among N users (a user put in the sticky table, as the miss path does): the
  control plane's cost until the bytes for a delta stream are ready (the cache stages the user,
  flushes it into the group's scope table, the stream's subscription finds the one changed
  scope through the table's journal and encodes it). Against the same arrival among 1,000
  users (the cost must not grow with N), and against what a SotW or REST stream costs for the
  same arrival in the same run (every scope encoded again).
  How Envoy fares with N scopes (apply time, heap, CPU per arrival) is ``bench.churn``'s.
- 1,000 pods: one service's pods all visible in Envoy's ``/clusters``, and one pod's weight
  change in the cache, against the same with 10 pods.

    python -m bench.scale [--users 100000] [--pods 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench._common import ENVOY_DIR, Figure, Scenario, envoy, median, until
from controlplane.domain import ServiceKey, ServiceState
from controlplane.domain.sticky import StickyTable
from controlplane.runtime.envoy import load_bootstrap
from controlplane.runtime.ports import free_port
from controlplane.xds import resources as res
from controlplane.xds.cache import SnapshotCache, SnapshotKey
from controlplane.xds.config import NodeGroupSettings, XdsSettings
from controlplane.xds.protocol import DeltaRequest, DeltaSubscription
from tests.support.state import MemoryStateSource, service_state
from tests.support.xds_stack import XdsStack

KEY = SnapshotKey("default", res.SourceKind.ADS)
GAME = ServiceKey("bench", "game")
SMALL = 1000
ARRIVALS = 200


def arrival_costs(users: int) -> tuple[float, float]:
    """Median seconds per arrival among ``users``: for a delta stream, and for a SotW one."""
    sticky = StickyTable(window_s=3600)
    cache = SnapshotCache(XdsSettings(), sticky.routes)
    sticky.observer = cache.user_changed
    cache.replace_all([service_state("bench", "game", [20000 + i for i in range(10)])])
    cache.snapshot(KEY)
    for i in range(users):
        sticky.put(GAME, f"user-{i:07d}", i % 10, seen=0)
    scopes = cache.snapshot(KEY).type(res.SCOPED)
    sub = DeltaSubscription(res.SCOPED)
    sub.on_request(DeltaRequest(res.SCOPED))
    updated, _ = sub.changes(scopes)
    sub.sent({n: scopes.versions[n] for n in updated}, [], "0")
    delta, sotw = [], []
    for i in range(ARRIVALS):
        started = time.perf_counter()
        sticky.put(GAME, f"new-{i}", i % 10, seen=0)
        updated, removed = sub.changes(scopes)
        b"".join(scopes.proto(name) for name in updated)
        sub.sent({n: scopes.versions[n] for n in updated}, removed, str(i))
        delta.append(time.perf_counter() - started)
        if i < 5:  # whole-table encodes are slow at 100,000: a few are enough
            started = time.perf_counter()
            scopes.view(()).sotw_resources(res.SCOPED)
            sotw.append(time.perf_counter() - started)
    return median(delta), median(sotw)


async def pods_figures(scenario: Scenario, pods: int) -> None:
    """One service with ``pods`` pods: Envoy sees them all; one pod's change in the cache."""
    big = service_state("bench", "wide", [20000 + i for i in range(pods)])
    small = service_state("bench", "narrow", [20000 + i for i in range(10)])
    times = {}
    for state in (big, small):
        cache = SnapshotCache(XdsSettings())
        cache.replace_all([state])
        cache.snapshot(KEY)
        took = []
        for weight in (2, 3, 4, 5, 6):
            pods_now = tuple(
                p.model_copy(update={"weight": weight}) if p.index == 0 else p for p in state.pods
            )
            started = time.perf_counter()
            cache.update({state.service.key: ServiceState(state.service, pods_now)})
            took.append(time.perf_counter() - started)
        times[len(state.pods)] = median(took)
    scenario.add(
        Figure(
            f"one pod's weight change in a {pods:,}-pod service: cache update",
            times[pods] * 1000,
            "ms",
            "the same in a 10-pod service",
            times[10] * 1000,
            higher_is_better=False,
        )
    )
    seed = service_state("bench", "seed", [20000])  # the two measured services come later
    source = MemoryStateSource([seed])
    settings = XdsSettings(default_group=NodeGroupSettings(listener_port=free_port()))
    stack = await XdsStack(source, settings).start()
    process = envoy(load_bootstrap(ENVOY_DIR / "ads.yaml", xds_port=stack.grpc_port))
    seen = {}
    try:
        await process.start()
        for state in (small, big):
            started = time.perf_counter()
            source.put(state)

            async def visible(state: ServiceState = state) -> bool:
                name = f"^{state.service.key.namespace}/{state.service.key.name}$"
                body = json.loads(await process.get(f"/clusters?format=json&filter={name}"))
                statuses = body.get("cluster_statuses", [])
                return bool(statuses) and len(statuses[0].get("host_statuses", [])) == len(
                    state.pods
                )

            await until(visible, timeout_s=60, every_s=0.02)
            seen[len(state.pods)] = time.perf_counter() - started
    finally:
        await process.close()
        await stack.stop()
    scenario.add(
        Figure(
            f"a new {pods:,}-pod service visible in Envoy's /clusters",
            seen[pods],
            "s",
            "a new 10-pod service",
            seen[10],
            higher_is_better=False,
        )
    )


async def run(users: int, pods: int) -> Scenario:
    scenario = Scenario(
        "scale",
        f"Scale: one arrival among {users:,} users, {pods:,} pods",
        f"python -m bench.scale --users {users} --pods {pods}",
        params={"users": users, "pods": pods, "arrivals": ARRIVALS},
    )
    small_delta, _ = arrival_costs(SMALL)
    delta, sotw = arrival_costs(users)
    scenario.add(
        Figure(
            f"one arrival among {users:,} users: control plane, delta stream",
            delta * 1000,
            "ms",
            f"one arrival among {SMALL:,} users",
            small_delta * 1000,
            higher_is_better=False,
            note="sticky table -> scope table -> journal -> one scope encoded",
        )
    )
    scenario.add(
        Figure(
            f"one arrival among {users:,} users: control plane, delta stream",
            delta * 1000,
            "ms",
            "the same arrival for a SotW/REST stream (every scope encoded again)",
            sotw * 1000,
            higher_is_better=False,
        )
    )
    await pods_figures(scenario, pods)
    return scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--pods", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(run(args.users, args.pods))


if __name__ == "__main__":
    main()
