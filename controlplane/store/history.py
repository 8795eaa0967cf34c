"""Failover history: a capped Redis list per service, newest first."""

from __future__ import annotations

from typing import cast

from controlplane.domain import FailoverEvent, FailoverType
from controlplane.store.connection import RedisClient
from controlplane.store.keys import ServiceKeys


class FailoverHistory:
    def __init__(self, redis: RedisClient, cap: int = 100) -> None:
        self._redis = redis
        self.cap = cap

    async def record(self, keys: ServiceKeys, event: FailoverEvent) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.events, event.model_dump_json())
            pipe.ltrim(keys.events, 0, self.cap - 1)
            await pipe.execute()

    async def recent(
        self,
        keys: ServiceKeys,
        limit: int | None = None,
        *,
        pod: int | None = None,
        kind: FailoverType | None = None,
    ) -> list[FailoverEvent]:
        """Events newest first, at most ``limit`` (default: all kept); with ``pod`` or ``kind``,
        only those of that pod or type (``limit`` counts the events that match)."""
        if pod is not None or kind is not None:
            matching = [
                event
                for event in await self.recent(keys)
                if (pod is None or event.pod == pod) and (kind is None or event.type == kind)
            ]
            return matching[:limit]
        count = self.cap if limit is None else min(limit, self.cap)
        raw = cast(list[str], await self._redis.lrange(keys.events, 0, count - 1))
        return [FailoverEvent.model_validate_json(item) for item in raw]
