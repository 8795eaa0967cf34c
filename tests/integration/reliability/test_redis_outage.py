"""Redis goes away: routing goes on, and nothing is lost when it comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.exceptions import RedisError

from controlplane.domain import (
    NewUserLimits,
    Pod,
    RouteRequest,
    Service,
    ServiceKey,
    ServiceSettings,
)
from controlplane.errors import NewUsersLimited, StoreUnavailable
from controlplane.manager import StatefulRouteManager
from controlplane.runtime.redis_server import RedisServer
from controlplane.store import Store
from tests.support.redis_aof import written_to_aof
from tests.support.waiting import eventually

KEY = ServiceKey("games", "lobby")


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test may kill and restart (AOF on, like production)."""
    with RedisServer(appendonly=True) as server:
        yield server


def ask(uid: str) -> RouteRequest:
    return RouteRequest(namespace=KEY.namespace, service=KEY.name, uid=uid)


async def test_routing_survives_an_outage_and_binds_made_meanwhile_are_written_after(
    own_redis: RedisServer,
) -> None:
    store = Store.from_url(own_redis.url)
    manager = StatefulRouteManager(store)
    await manager.register_service(Service(namespace=KEY.namespace, name=KEY.name))
    for index in range(4):
        await manager.upsert_pod(KEY, Pod(index=index, host="10.0.0.1", port=9000 + index))
    before = {
        f"old-{i}": (await manager.route_request(ask(f"old-{i}"))).pod_index for i in range(50)
    }
    await eventually(lambda: written_to_aof(own_redis.url), "the binds in the AOF")

    own_redis.kill()
    during_old = {uid: (await manager.route_request(ask(uid))).pod_index for uid in before}
    during_new = {
        f"new-{i}": (await manager.route_request(ask(f"new-{i}"))).pod_index for i in range(50)
    }
    other = StatefulRouteManager(Store.from_url(own_redis.url))
    with pytest.raises(StoreUnavailable):  # a replica that never saw the service cannot guess
        await other.route_request(ask("new-0"))
    with pytest.raises(RedisError):  # still away: the pending binds stay pending
        await manager.router.replay_pending_binds()
    assert during_old == before
    assert len(set(during_new.values())) > 1  # spread, not piled on one pod

    await asyncio.to_thread(own_redis.start)

    async def replayed() -> int | None:
        try:
            return await manager.router.replay_pending_binds()
        except RedisError:  # the client reconnects on its next call
            return None

    assert await eventually(replayed, "the pending binds written") == 50
    keys = store.keys(KEY)
    forward = {uid: pod async for uid, pod in store.bindings.scan(keys)}
    reverse = {}
    for pod in range(4):
        async for uid in store.bindings.users_of(keys, pod):
            reverse[uid] = pod
    assert forward == reverse
    assert {uid: forward[uid] for uid in before} == before  # 0 bindings lost
    assert {uid: forward[uid] for uid in during_new} == during_new
    assert {
        uid: (await manager.route_request(ask(uid))).pod_index for uid in during_new
    } == during_new
    await manager.close()
    await other.close()
    await store.close()


async def test_without_redis_new_users_stay_within_the_bound_known_users_keep_their_pod(
    own_redis: RedisServer,
) -> None:
    store = Store.from_url(own_redis.url)
    manager = StatefulRouteManager(store)
    settings = ServiceSettings(new_users=NewUserLimits(max_bound_users=20))
    await manager.register_service(
        Service(namespace=KEY.namespace, name=KEY.name, settings=settings)
    )
    for index in range(4):
        await manager.upsert_pod(KEY, Pod(index=index, host="10.0.0.1", port=9000 + index))
    before = {
        f"old-{i}": (await manager.route_request(ask(f"old-{i}"))).pod_index for i in range(15)
    }

    own_redis.kill()
    placed, refused = 0, 0
    for i in range(100):
        try:
            await manager.route_request(ask(f"new-{i}"))
            placed += 1
        except NewUsersLimited:
            refused += 1
    during_old = {uid: (await manager.route_request(ask(uid))).pod_index for uid in before}

    assert (placed, refused) == (5, 95)  # the route table holds 20 users of the service
    assert len(manager.sticky.routes(KEY)) == 20
    assert during_old == before
    await manager.close()


async def test_every_pooled_connection_works_again_once_redis_is_back(
    own_redis: RedisServer,
) -> None:
    # Connections opened before a restart are dead sockets; each is reconnected on its first
    # use instead of failing that command (a user placed then would miss its binding).
    store = Store.from_url(own_redis.url)
    try:
        await asyncio.gather(*(store.redis.blpop(["nothing"], timeout=0.2) for _ in range(8)))
        own_redis.kill()
        await asyncio.to_thread(own_redis.start)
        answers = await asyncio.gather(
            *(store.redis.ping() for _ in range(8)), return_exceptions=True
        )
        assert answers == [True] * 8
    finally:
        await store.close()
