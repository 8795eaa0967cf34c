"""Redis: bindings, the reverse index pod -> users, the pod registry and failover history."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from controlplane.domain import ServiceKey
from controlplane.store.bindings import BindingStore
from controlplane.store.history import FailoverHistory
from controlplane.store.keys import KeySpace, ServiceKeys
from controlplane.store.registry import ServiceRegistry


def connect(url: str, *, max_connections: int = 64, timeout_s: float = 5.0) -> Redis:
    """A client whose callers wait for a free connection instead of failing when all are busy."""
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=10,
    )
    return Redis.from_pool(pool)  # the client owns the pool and closes it


class Store:
    """The control plane's Redis: one client, one key space, three views of the data."""

    def __init__(self, redis: Redis, *, prefix: str = "sr", history_cap: int = 100) -> None:
        self.redis = redis
        self.keyspace = KeySpace(prefix)
        self.bindings = BindingStore(redis)
        self.registry = ServiceRegistry(redis, self.keyspace)
        self.history = FailoverHistory(redis, history_cap)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "sr", history_cap: int = 100) -> Store:
        return cls(connect(url), prefix=prefix, history_cap=history_cap)

    def keys(self, key: ServiceKey) -> ServiceKeys:
        return self.keyspace.of(key)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.redis.aclose()


__all__ = [
    "BindingStore",
    "FailoverHistory",
    "KeySpace",
    "ServiceKeys",
    "ServiceRegistry",
    "Store",
    "connect",
]
