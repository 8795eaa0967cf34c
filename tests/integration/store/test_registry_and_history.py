"""Pods change by compare-and-set, history stays capped, a deleted service leaves nothing."""

from __future__ import annotations

import asyncio

from controlplane.domain import FailoverEvent, FailoverType, Pod, Service, ServiceKey
from controlplane.store import Store

SERVICE = ServiceKey("games", "lobby")


def heavier(pod: Pod) -> tuple[Pod, int]:
    weight = pod.weight + 1
    return pod.model_copy(update={"weight": weight}), weight


async def test_concurrent_pod_updates_are_all_applied_one_after_another(store: Store) -> None:
    keys = store.keys(SERVICE)
    await store.registry.put_pod(keys, Pod(index=0, host="127.0.0.1", port=9000, weight=1))
    results = await asyncio.gather(
        *(store.registry.update_pod(keys, 0, heavier) for _ in range(20))
    )
    seen = sorted(outcome for _, outcome in (r for r in results if r is not None))
    assert seen == list(range(2, 22))  # each writer saw the previous one's write
    assert (await store.registry.pods(keys))[0].weight == 21


async def test_updating_a_missing_pod_changes_nothing(store: Store) -> None:
    assert await store.registry.update_pod(store.keys(SERVICE), 3, heavier) is None
    assert await store.registry.pods(store.keys(SERVICE)) == {}


async def test_history_keeps_the_newest_events_up_to_its_cap(store: Store) -> None:
    keys = store.keys(SERVICE)
    store.history.cap = 3
    for pod in range(5):
        event = FailoverEvent(
            at=float(pod),
            type=FailoverType.POD_FAILURE,
            namespace="games",
            service="lobby",
            pod=pod,
        )
        await store.history.record(keys, event)
    assert [e.pod for e in await store.history.recent(keys)] == [4, 3, 2]


async def test_deleting_a_service_removes_every_key_of_it(store: Store) -> None:
    keys = store.keys(SERVICE)
    await store.registry.put_service(Service(namespace="games", name="lobby"))
    await store.registry.put_pod(keys, Pod(index=1, host="127.0.0.1", port=9001))
    await store.bindings.bind_many(keys, [("alice", 1)], now=1.0)
    await store.registry.delete_service(SERVICE)
    assert [name async for name in store.redis.scan_iter("*{games/lobby}*")] == []
    assert await store.registry.service_keys() == []
