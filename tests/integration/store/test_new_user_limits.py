"""The bind script's limits on new users, on every Redis topology: a count and a token bucket
kept in Redis, so every replica calling it shares them."""

from __future__ import annotations

from controlplane.domain import NewUserLimits, ServiceKey
from controlplane.store import Refusal, Store

SERVICE = ServiceKey("games", "lobby")
ROOMY = {"new_per_s": 1_000_000.0, "burst": 10_000_000}


async def test_a_full_service_refuses_new_users_and_still_answers_bound_ones(
    store: Store,
) -> None:
    keys = store.keys(SERVICE)
    limits = NewUserLimits(max_bound_users=3, **ROOMY)
    first = await store.bindings.admit_many(
        keys, [("a", 0), ("b", 1), ("c", 0), ("d", 1)], 1.0, limits
    )
    again = await store.bindings.admit_many(keys, [("a", 1), ("e", 0)], 2.0, limits)
    assert first == [(0, True), (1, True), (0, True), Refusal.FULL]
    assert again == [(0, False), Refusal.FULL]
    assert await store.bindings.count(keys) == 3
    assert await store.bindings.get(keys, "d") is None


async def test_room_made_by_an_unbind_takes_a_new_user_again(store: Store) -> None:
    keys = store.keys(SERVICE)
    limits = NewUserLimits(max_bound_users=1, **ROOMY)
    await store.bindings.admit_many(keys, [("a", 0)], 1.0, limits)
    await store.bindings.unbind(keys, "a")
    assert await store.bindings.admit_many(keys, [("b", 0)], 2.0, limits) == [(0, True)]


async def test_the_bucket_gives_a_burst_then_new_per_s(store: Store) -> None:
    keys = store.keys(SERVICE)
    limits = NewUserLimits(new_per_s=2.0, burst=3)
    burst = await store.bindings.admit_many(keys, [(f"u{i}", 0) for i in range(5)], 10.0, limits)
    assert burst == [(0, True)] * 3 + [Refusal.RATE] * 2
    # Half a second refills one token; a quarter more refills half of one: not enough.
    refilled = await store.bindings.admit_many(keys, [("v0", 0), ("v1", 0)], 10.5, limits)
    assert refilled == [(0, True), Refusal.RATE]
    assert await store.bindings.admit_many(keys, [("v1", 0)], 10.75, limits) == [Refusal.RATE]
    assert await store.bindings.admit_many(keys, [("v1", 0)], 11.0, limits) == [(0, True)]


async def test_a_lagging_clock_takes_no_token_back_and_gets_none_early(store: Store) -> None:
    keys = store.keys(SERVICE)
    limits = NewUserLimits(new_per_s=1.0, burst=1)
    assert await store.bindings.admit_many(keys, [("a", 0)], 100.0, limits) == [(0, True)]
    # Another replica whose clock is a minute behind: the bucket is empty for it too.
    assert await store.bindings.admit_many(keys, [("b", 0)], 40.0, limits) == [Refusal.RATE]
    assert await store.bindings.admit_many(keys, [("b", 0)], 101.0, limits) == [(0, True)]


async def test_the_bucket_key_lives_only_until_it_would_be_full_again(store: Store) -> None:
    keys = store.keys(SERVICE)
    limits = NewUserLimits(new_per_s=100.0, burst=200)
    assert await store.redis.exists(keys.new_user_tokens) == 0
    await store.bindings.admit_many(keys, [(f"u{i}", 0) for i in range(50)], 1.0, limits)
    ttl_ms = await store.redis.pttl(keys.new_user_tokens)
    assert 500 < ttl_ms <= 1_500  # 50 tokens at 100/s refill in 0.5 s, plus a second


async def test_binds_without_limits_are_never_refused(store: Store) -> None:
    keys = store.keys(SERVICE)
    placed = await store.bindings.bind_many(keys, [(f"u{i}", i % 2) for i in range(2_000)], 1.0)
    assert all(created for _, created in placed)
    assert await store.redis.exists(keys.new_user_tokens) == 0
