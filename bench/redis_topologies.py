"""Bound lookups and binds per second: a 3-master Redis Cluster against one Redis, same run.

Both topologies get the same load from the same number of client processes: each process
runs a route manager over its own services (a service lives in one slot, so only many
services can spread over the masters), first binding new users, then routing them again.

    python -m bench.redis_topologies [--processes P] [--services S] [--users N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier

from bench._common import UNBOUNDED_NEW_USERS, Figure, Scenario
from controlplane.domain import Pod, RouteRequest, Service, ServiceKey, ServiceSettings
from controlplane.manager import StatefulRouteManager
from controlplane.runtime.redis_cluster import RedisClusterNodes
from controlplane.runtime.redis_server import RedisServer
from controlplane.store import Store
from controlplane.store.config import RedisSettings

PHASES = ("binds_per_s", "bound_lookups_per_s")


async def client(
    settings: RedisSettings, worker: int, services: int, users: int, concurrency: int, go: Barrier
) -> list[float]:
    """Seconds this process took for each phase, started together with the other processes."""
    store = Store.from_settings(settings)
    manager = StatefulRouteManager(store)
    names = [f"w{worker}s{s}" for s in range(services)]
    for name in names:
        settings = ServiceSettings(new_users=UNBOUNDED_NEW_USERS)
        await manager.register_service(Service(namespace="bench", name=name, settings=settings))
        for index in range(8):
            await manager.upsert_pod(
                ServiceKey("bench", name), Pod(index=index, host="127.0.0.1", port=9000)
            )
    requests = [
        RouteRequest(namespace="bench", service=names[i % services], uid=f"u{i}")
        for i in range(users)
    ]
    took = []
    for _ in PHASES:  # the first pass binds every user, the second finds them bound
        await asyncio.to_thread(go.wait)
        pending = iter(requests)  # shared: each caller takes the next request
        started = time.perf_counter()
        await asyncio.gather(*(route_all(manager, pending) for _ in range(concurrency)))
        took.append(time.perf_counter() - started)
    await manager.close()
    await store.close()
    return took


async def route_all(manager: StatefulRouteManager, requests: Iterator[RouteRequest]) -> None:
    for request in requests:
        await manager.route_request(request)


def process_main(args: tuple[RedisSettings, int, int, int, int, Barrier]) -> list[float]:
    return asyncio.run(client(*args))


def measure(
    settings: RedisSettings, processes: int, services: int, users: int, concurrency: int
) -> dict[str, float]:
    context = mp.get_context("spawn")
    go = context.Manager().Barrier(processes)
    jobs = [(settings, w, services, users, concurrency, go) for w in range(processes)]
    with context.Pool(processes) as pool:
        took = pool.map(process_main, jobs)
    # Rate over the slowest process: every process's calls were done by then.
    return {phase: processes * users / max(t[i] for t in took) for i, phase in enumerate(PHASES)}


def run(
    processes: int, services: int, users: int, concurrency: int, replicas: int
) -> dict[str, float]:
    def on(settings: Callable[[], RedisSettings]) -> dict[str, float]:
        return measure(settings(), processes, services, users, concurrency)

    with RedisServer() as server:
        single = on(lambda: RedisSettings(url=server.url))
    with RedisClusterNodes(masters=3, replicas=replicas) as cluster:
        clustered = on(lambda: RedisSettings(cluster_nodes=cluster.addresses))
    results = {f"single_{k}": v for k, v in single.items()}
    results |= {f"cluster_{k}": v for k, v in clustered.items()}
    for phase in PHASES:
        results[f"{phase.removesuffix('_per_s')}_ratio"] = clustered[phase] / single[phase]
    return results


async def scenario(
    processes: int, services: int, users: int, concurrency: int, replicas: int
) -> Scenario:
    """Cluster vs single Redis as a Scenario for ``python -m bench``."""
    results = await asyncio.to_thread(run, processes, services, users, concurrency, replicas)
    scenario = Scenario(
        "redis_topologies",
        f"Redis Cluster (3 masters, {replicas} replica each) vs one Redis",
        f"python -m bench.redis_topologies --processes {processes} --services {services} "
        f"--users {users} --concurrency {concurrency} --replicas {replicas}",
        params={"processes": processes, "services": services, "users": users},
    )
    for phase, unit in (("binds_per_s", "binds/s"), ("bound_lookups_per_s", "lookups/s")):
        name = "new-user binds" if phase == "binds_per_s" else "bound lookups"
        scenario.add(
            Figure(
                f"{name}, 3-master cluster",
                results[f"cluster_{phase}"],
                unit,
                "one Redis, same client processes",
                results[f"single_{phase}"],
            )
        )
    return scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--services", type=int, default=12, help="per process")
    parser.add_argument("--users", type=int, default=30_000, help="per process")
    parser.add_argument("--concurrency", type=int, default=256, help="calls in flight per process")
    parser.add_argument("--replicas", type=int, default=1, help="per cluster master")
    args = parser.parse_args()
    r = run(args.processes, args.services, args.users, args.concurrency, args.replicas)
    for phase in PHASES:
        name = phase.removesuffix("_per_s")
        cluster, single = r[f"cluster_{phase}"], r[f"single_{phase}"]
        print(
            f"{name}: cluster {cluster:,.0f}/s vs single {single:,.0f}/s "
            f"(ratio {r[f'{name}_ratio']:.2f}x, {args.processes} client processes)"
        )
    print(json.dumps({k: round(v, 2) for k, v in r.items()}))


if __name__ == "__main__":
    main()
