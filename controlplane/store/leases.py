"""Leases of self-registered pods: when each pod's lease ends, one sorted set per service."""

from __future__ import annotations

from typing import cast

from controlplane.store.connection import RedisClient
from controlplane.store.keys import ServiceKeys


class LeaseStore:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def renew(self, keys: ServiceKeys, index: int, ends_at: float) -> None:
        """Pod ``index``'s lease now ends at ``ends_at`` (unix seconds)."""
        await self._redis.zadd(keys.leases, {str(index): ends_at})

    async def ends_at(self, keys: ServiceKeys, index: int) -> float | None:
        """When pod ``index``'s lease ends; None if it holds none."""
        score = await self._redis.zscore(keys.leases, str(index))
        return None if score is None else float(score)

    async def lapsed(self, keys: ServiceKeys, now: float) -> list[tuple[int, float]]:
        """The pods whose lease ended by ``now``, with when it ended, oldest first."""
        ended = cast(
            list[tuple[str, float]],
            await self._redis.zrangebyscore(keys.leases, "-inf", now, withscores=True),
        )
        return [(int(index), float(at)) for index, at in ended]

    async def drop(self, keys: ServiceKeys, index: int) -> None:
        await self._redis.zrem(keys.leases, str(index))
