"""The binding store against a real Redis: atomic binds, a consistent reverse index, expiry."""

from __future__ import annotations

import asyncio

from controlplane.domain import ServiceKey
from controlplane.store import Store

SERVICE = ServiceKey("games", "lobby")


async def reverse_index(store: Store, pods: range) -> dict[str, int]:
    keys = store.keys(SERVICE)
    found: dict[str, int] = {}
    for pod in pods:
        async for uid in store.bindings.users_of(keys, pod):
            assert uid not in found, f"{uid} is in the index of two pods"
            found[uid] = pod
    return found


async def forward(store: Store) -> dict[str, int]:
    return {uid: pod async for uid, pod in store.bindings.scan(store.keys(SERVICE))}


async def test_first_bind_wins_and_later_binds_return_the_winner(store: Store) -> None:
    keys = store.keys(SERVICE)
    first = await store.bindings.bind_many(keys, [("alice", 2)], now=100.0)
    second = await store.bindings.bind_many(keys, [("alice", 0)], now=101.0)
    assert first == [(2, True)]
    assert second == [(2, False)]
    binding = await store.bindings.get(keys, "alice")
    assert binding is not None
    assert (binding.pod, binding.bound_at, binding.last_seen) == (2, 100.0, 100.0)


async def test_concurrent_binds_of_one_uid_leave_exactly_one_binding(store: Store) -> None:
    keys = store.keys(SERVICE)
    results = await asyncio.gather(
        *(store.bindings.bind_many(keys, [("bob", i % 4)], now=1.0) for i in range(200))
    )
    winners = {pod for [(pod, _)] in results}
    created = sum(created for [(_, created)] in results)
    assert len(winners) == 1
    assert created == 1
    assert await reverse_index(store, range(4)) == {"bob": winners.pop()}


async def test_move_keeps_forward_and_reverse_index_equal(store: Store) -> None:
    keys = store.keys(SERVICE)
    await store.bindings.bind_many(keys, [(f"u{i}", i % 3) for i in range(30)], now=1.0)
    moved = await store.bindings.move(keys, ["u0", "u3", "u1"], 2, now=2.0, only_from=0)
    assert sorted(moved) == ["u0", "u3"]  # u1 was on pod 1, not pod 0
    assert await forward(store) == await reverse_index(store, range(3))
    assert (await forward(store))["u0"] == 2


async def test_move_without_source_binds_an_unbound_user(store: Store) -> None:
    keys = store.keys(SERVICE)
    assert await store.bindings.move(keys, ["carol"], 1, now=5.0, only_from=None) == ["carol"]
    assert await forward(store) == {"carol": 1} == await reverse_index(store, range(2))


async def test_unbind_removes_the_user_from_both_indexes(store: Store) -> None:
    keys = store.keys(SERVICE)
    await store.bindings.bind_many(keys, [("dave", 0)], now=1.0)
    removed = await store.bindings.unbind(keys, "dave")
    assert removed is not None
    assert removed.pod == 0
    assert await store.bindings.unbind(keys, "dave") is None
    assert await forward(store) == {} == await reverse_index(store, range(1))


async def test_idle_users_expire_from_both_indexes_and_touched_ones_stay(store: Store) -> None:
    keys = store.keys(SERVICE)
    await store.bindings.bind_many(keys, [(f"u{i}", i % 2) for i in range(10)], now=100.0)
    await store.bindings.touch_many(keys, [("u1", 500.0), ("u2", 500.0), ("ghost", 500.0)])
    expired = await store.bindings.expire_idle(keys, cutoff=400.0)
    assert expired == 8
    assert await forward(store) == {"u1": 1, "u2": 0} == await reverse_index(store, range(2))
    assert await store.bindings.get(keys, "ghost") is None


async def test_count_per_pod_counts_the_reverse_index(store: Store) -> None:
    keys = store.keys(SERVICE)
    await store.bindings.bind_many(keys, [(f"u{i}", i % 3) for i in range(10)], now=1.0)
    assert await store.bindings.count_per_pod(keys, [0, 1, 2, 7]) == {0: 4, 1: 3, 2: 3, 7: 0}


async def test_every_key_of_a_service_shares_one_hash_tag(store: Store) -> None:
    keys = store.keys(SERVICE)
    await store.bindings.bind_many(keys, [("erin", 0)], now=1.0)
    names = [name async for name in store.redis.scan_iter("*")]
    assert names
    assert all("{games/lobby}" in name for name in names)


async def test_a_move_from_any_pod_takes_users_off_whichever_pod_held_them(store: Store) -> None:
    keys = store.keys(SERVICE)
    await store.bindings.bind_many(keys, [("u0", 0), ("u1", 1), ("u5", 5)], now=1.0)
    moved = await store.bindings.move(keys, ["u0", "u1", "u5", "u9"], 3, now=2.0, only_from=None)
    assert sorted(moved) == ["u0", "u1", "u5", "u9"]
    assert await forward(store) == dict.fromkeys(moved, 3) == await reverse_index(store, range(6))
