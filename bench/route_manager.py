"""route_request throughput from one process against a local redis-server.

Baseline, same run, same Redis: the obvious client code, one awaited command per user
(HGET for a lookup, HSETNX + SADD for a bind). Ours: route_request with many callers in
flight, whose Redis work the manager coalesces into one HMGET / one pipeline of bind scripts
per event-loop turn.

    python -m bench.route_manager [--users N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable

from bench._common import UNBOUNDED_NEW_USERS, Figure, Scenario, rate
from controlplane.domain import Pod, RouteRequest, Service, ServiceKey, ServiceSettings, Strategy
from controlplane.manager import StatefulRouteManager
from controlplane.runtime.redis_server import RedisServer
from controlplane.store import Store, connect

NS, SVC = "bench", "game"


async def run(users: int, concurrency: int) -> dict[str, float]:
    with RedisServer() as server:
        redis = connect(server.url)
        manager = StatefulRouteManager(Store(redis))
        settings = ServiceSettings(strategy=Strategy.BOUNDED_HASH, new_users=UNBOUNDED_NEW_USERS)
        await manager.register_service(Service(namespace=NS, name=SVC, settings=settings))
        for i in range(8):
            await manager.upsert_pod(
                ServiceKey(NS, SVC), Pod(index=i, host="127.0.0.1", port=9000 + i)
            )

        def route(prefix: str) -> Callable[[int], Awaitable[object]]:
            def one(i: int) -> Awaitable[object]:
                return manager.route_request(
                    RouteRequest(namespace=NS, service=SVC, uid=f"{prefix}{i}")
                )

            return one

        async def naive_bind(i: int) -> None:
            if await redis.hsetnx("naive:b", f"n{i}", str(i % 8)):
                await redis.sadd(f"naive:p:{i % 8}", f"n{i}")

        async def naive_lookup(i: int) -> None:
            await redis.hget("naive:b", f"n{i}")

        results = {
            "naive_binds_per_s": await rate(users, 1, naive_bind),
            "binds_per_s": await rate(users, concurrency, route("u")),
            "naive_lookups_per_s": await rate(users, 1, naive_lookup),
            "bound_lookups_per_s": await rate(users, concurrency, route("u")),
        }
        await manager.close()
        await redis.aclose()
    results["binds_ratio"] = results["binds_per_s"] / results["naive_binds_per_s"]
    results["lookups_ratio"] = results["bound_lookups_per_s"] / results["naive_lookups_per_s"]
    return results


async def scenario(users: int, concurrency: int) -> Scenario:
    """The figures above as a Scenario for ``python -m bench``."""
    results = await run(users, concurrency)
    scenario = Scenario(
        "redis",
        "Redis: route_request (lookups and binds) from one process",
        f"python -m bench.route_manager --users {users} --concurrency {concurrency}",
        params={"users": users, "concurrency": concurrency, "pods": 8},
    )
    scenario.add(
        Figure(
            "route_request, bound users",
            results["bound_lookups_per_s"],
            "lookups/s",
            "HGET one at a time",
            results["naive_lookups_per_s"],
        )
    )
    scenario.add(
        Figure(
            "route_request, new users (bind)",
            results["binds_per_s"],
            "binds/s",
            "HSETNX + SADD one at a time",
            results["naive_binds_per_s"],
        )
    )
    return scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    results = asyncio.run(run(args.users, args.concurrency))
    print(
        f"new-user binds: {results['binds_per_s']:,.0f}/s "
        f"(baseline HSETNX+SADD one at a time {results['naive_binds_per_s']:,.0f}/s, "
        f"ratio {results['binds_ratio']:.2f}x)"
    )
    print(
        f"bound route_request: {results['bound_lookups_per_s']:,.0f}/s "
        f"(baseline HGET one at a time {results['naive_lookups_per_s']:,.0f}/s, "
        f"ratio {results['lookups_ratio']:.2f}x)"
    )
    print(json.dumps({k: round(v, 2) for k, v in results.items()}))


if __name__ == "__main__":
    main()
