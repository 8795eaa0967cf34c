"""Redis: bindings, the reverse index pod -> users, the pod registry and failover history."""

from __future__ import annotations

from redis.exceptions import RedisError

from controlplane.domain import ServiceKey
from controlplane.store.bindings import BindingStore, Refusal
from controlplane.store.config import RedisSettings
from controlplane.store.connection import RedisClient, connect
from controlplane.store.history import FailoverHistory
from controlplane.store.keys import KeySpace, ServiceKeys
from controlplane.store.leases import LeaseStore
from controlplane.store.registry import ServiceRegistry


class Store:
    """The control plane's Redis: one client, one key space, four views of the data.

    The client may be a single server, a Cluster or a Sentinel-managed primary: see
    connection.py for why one implementation serves all three.
    """

    def __init__(self, redis: RedisClient, *, prefix: str = "sr", history_cap: int = 100) -> None:
        self.redis = redis
        self.keyspace = KeySpace(prefix)
        self.bindings = BindingStore(redis)
        self.registry = ServiceRegistry(redis, self.keyspace)
        self.history = FailoverHistory(redis, history_cap)
        self.leases = LeaseStore(redis)

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> Store:
        """A store on whichever topology ``settings`` choose."""
        return cls(connect(settings), prefix=settings.prefix, history_cap=settings.history_cap)

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
    "LeaseStore",
    "RedisClient",
    "Refusal",
    "ServiceKeys",
    "ServiceRegistry",
    "Store",
    "connect",
]
