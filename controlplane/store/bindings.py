"""Bindings uid -> pod, the reverse index pod -> uids and last-seen, kept in step by scripts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from controlplane.domain import Binding
from controlplane.store import scripts
from controlplane.store.keys import ServiceKeys


def parse_binding(uid: str, value: str, last_seen: float | None = None) -> Binding:
    pod, _, bound_at = value.partition("|")
    return Binding(uid=uid, pod=int(pod), bound_at=float(bound_at), last_seen=last_seen)


def pod_of(value: str) -> int:
    return int(value[: value.index("|")])


class BindingStore:
    """All operations on the bindings of services. Every method touches one service's slot."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._bind = redis.register_script(scripts.BIND_IF_ABSENT)
        self._move = redis.register_script(scripts.MOVE)
        self._unbind = redis.register_script(scripts.UNBIND)
        self._expire = redis.register_script(scripts.EXPIRE_IDLE)

    async def lookup_many(self, keys: ServiceKeys, uids: Sequence[str]) -> list[int | None]:
        """The pod of each uid (None when unbound), in one round trip."""
        values = cast(list[str | None], await self._redis.hmget(keys.bindings, list(uids)))
        return [None if v is None else pod_of(v) for v in values]

    async def get(self, keys: ServiceKeys, uid: str) -> Binding | None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.bindings, uid)
            pipe.zscore(keys.last_seen, uid)
            value, seen = await pipe.execute()
        return None if value is None else parse_binding(uid, value, seen)

    async def bind_many(
        self, keys: ServiceKeys, wanted: Sequence[tuple[str, int]], now: float
    ) -> list[tuple[int, bool]]:
        """Bind each (uid, pod) unless the uid is bound already.

        Returns, per item, the pod the uid ends up on and whether this call bound it: the
        first writer wins, so concurrent callers on any replica agree on one pod.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for uid, pod in wanted:
                await self._bind(
                    keys=[keys.bindings, keys.last_seen, keys.pod_users(pod)],
                    args=[uid, pod, repr(now)],
                    client=pipe,
                )
            results: list[list[Any]] = await pipe.execute()
        return [(pod_of(value), bool(created)) for created, value in results]

    async def move(
        self, keys: ServiceKeys, uids: Sequence[str], to: int, now: float, *, only_from: int | None
    ) -> list[str]:
        """Rebind uids to pod ``to``; with ``only_from``, only those still bound to that pod.

        Without ``only_from`` an unbound uid is bound. Returns the uids that moved.
        """
        if not uids:
            return []
        expected = "" if only_from is None else str(only_from)
        moved: list[str] = await self._move(
            keys=[keys.bindings, keys.last_seen],
            args=[keys.pod_users_prefix, repr(now), expected, to, *uids],
        )
        return moved

    async def unbind(self, keys: ServiceKeys, uid: str) -> Binding | None:
        value: str | None = await self._unbind(
            keys=[keys.bindings, keys.last_seen], args=[keys.pod_users_prefix, uid]
        )
        return None if value is None else parse_binding(uid, value)

    async def touch_many(self, keys: ServiceKeys, seen: Iterable[tuple[str, float]]) -> None:
        """Record last use of bound users (never creates an entry for an unbound uid)."""
        mapping = dict(seen)
        if mapping:
            await self._redis.zadd(keys.last_seen, mapping, xx=True)

    async def expire_idle(self, keys: ServiceKeys, cutoff: float, limit: int = 1000) -> int:
        """Forget up to ``limit`` users unused since ``cutoff``; returns how many."""
        count: int = await self._expire(
            keys=[keys.bindings, keys.last_seen],
            args=[keys.pod_users_prefix, repr(cutoff), limit],
        )
        return count

    async def users_of(self, keys: ServiceKeys, pod: int, batch: int = 1000) -> AsyncIterator[str]:
        """Every uid bound to ``pod`` (the reverse index), scanned in batches."""
        async for uid in self._redis.sscan_iter(keys.pod_users(pod), count=batch):
            yield uid

    async def seen_since(
        self, keys: ServiceKeys, since: float, batch: int = 5000
    ) -> list[tuple[str, int, float]]:
        """(uid, pod, last seen) of every bound user seen after ``since``."""
        found: list[tuple[str, int, float]] = []
        offset = 0
        while True:
            page = cast(
                list[tuple[str, float]],
                await self._redis.zrangebyscore(
                    keys.last_seen, f"({since!r}", "+inf", start=offset, num=batch, withscores=True
                ),
            )
            if not page:
                return found
            pods = await self.lookup_many(keys, [uid for uid, _ in page])
            found.extend(
                (uid, pod, seen)
                for (uid, seen), pod in zip(page, pods, strict=True)
                if pod is not None
            )
            offset += len(page)

    async def count_per_pod(self, keys: ServiceKeys, pods: Iterable[int]) -> dict[int, int]:
        indexes = list(pods)
        async with self._redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.scard(keys.pod_users(index))
            counts: list[int] = await pipe.execute()
        return dict(zip(indexes, counts, strict=True))

    async def count(self, keys: ServiceKeys) -> int:
        total: int = await self._redis.hlen(keys.bindings)
        return total

    async def scan(self, keys: ServiceKeys, batch: int = 1000) -> AsyncIterator[tuple[str, int]]:
        """Every (uid, pod) of a service, scanned in batches."""
        async for uid, value in self._redis.hscan_iter(keys.bindings, count=batch):
            yield uid, pod_of(value)
