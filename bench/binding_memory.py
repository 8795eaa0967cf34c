"""Memory per binding, as Redis itself counts it (MEMORY USAGE of every key of the service).

Binds N users of 13-character uids over 8 pods on a fresh redis-server, then sums MEMORY
USAGE (SAMPLES 0: exact) over the service's keys and compares with the used_memory delta.

    python -m bench.binding_memory [--users N]
"""

from __future__ import annotations

import argparse
import asyncio
import json

from bench._common import Figure, Scenario
from controlplane.domain import ServiceKey
from controlplane.runtime.redis_server import RedisServer
from controlplane.store import Store

SERVICE = ServiceKey("bench", "game")
PODS = 8
BATCH = 1000


async def measure(users: int) -> dict[str, float]:
    with RedisServer() as server:
        store = Store.from_url(server.url)
        keys = store.keys(SERVICE)
        before = int((await store.redis.info("memory"))["used_memory"])
        for start in range(0, users, BATCH):
            wanted = [(f"user-{i:08d}", i % PODS) for i in range(start, min(users, start + BATCH))]
            await store.bindings.bind_many(keys, wanted, now=1_700_000_000.0 + start)
        after = int((await store.redis.info("memory"))["used_memory"])
        names = [keys.bindings, keys.last_seen, *(keys.pod_users(p) for p in range(PODS))]
        usage = {name: await store.redis.memory_usage(name, samples=0) or 0 for name in names}
        await store.close()
    total = sum(usage.values())
    return {
        "users": users,
        "memory_usage_bytes_per_binding": total / users,
        "used_memory_bytes_per_binding": (after - before) / users,
        "forward_hash_bytes": usage[keys.bindings] / users,
        "last_seen_zset_bytes": usage[keys.last_seen] / users,
        "reverse_sets_bytes": sum(usage[keys.pod_users(p)] for p in range(PODS)) / users,
        "bindings_per_gib": 2**30 / (total / users),
    }


async def naive_bytes_per_user(users: int) -> float:
    """The baseline: a forward hash uid -> pod alone (no reverse index, no last-seen)."""
    with RedisServer() as server:
        store = Store.from_url(server.url)
        for start in range(0, users, BATCH):
            chunk = {
                f"user-{i:08d}": str(i % PODS) for i in range(start, min(users, start + BATCH))
            }
            await store.redis.hset("naive", mapping=chunk)
        used = await store.redis.memory_usage("naive", samples=0) or 0
        await store.close()
    return used / users


async def scenario(users: int) -> Scenario:
    """Bytes per binding as a Scenario for ``python -m bench``."""
    results = await measure(users)
    naive = await naive_bytes_per_user(users)
    scenario = Scenario(
        "binding_memory",
        "Redis memory per binding",
        f"python -m bench.binding_memory --users {users}",
        params={"users": users, "pods": PODS},
    )
    scenario.add(
        Figure(
            "bytes per binding (MEMORY USAGE of every key)",
            results["memory_usage_bytes_per_binding"],
            "bytes",
            "a bare uid -> pod hash (no reverse index, no last-seen)",
            naive,
            higher_is_better=False,
        )
    )
    scenario.add(
        Figure("bindings per GiB", results["bindings_per_gib"], "bindings", note="before replicas")
    )
    return scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    results = asyncio.run(measure(parser.parse_args().users))
    print(json.dumps({k: round(v, 1) for k, v in results.items()}))


if __name__ == "__main__":
    main()
