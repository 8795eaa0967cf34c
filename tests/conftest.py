"""Fixtures shared by every test: a real redis-server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from controlplane.runtime.redis_server import RedisServer
from controlplane.store import Store, connect


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session, started here and stopped by PID at the end."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client on an empty database."""
    client = connect(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> Store:
    return Store(redis)
