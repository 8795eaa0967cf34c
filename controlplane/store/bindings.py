"""Bindings uid -> pod, the reverse index pod -> uids and last-seen, kept in step by scripts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from enum import StrEnum
from typing import Any, cast

from redis.commands.core import AsyncScript

from controlplane.domain import Binding, NewUserLimits
from controlplane.store import scripts
from controlplane.store.connection import RedisClient
from controlplane.store.keys import ServiceKeys


def parse_binding(uid: str, value: str, last_seen: float | None = None) -> Binding:
    pod, _, bound_at = value.partition("|")
    return Binding(uid=uid, pod=int(pod), bound_at=float(bound_at), last_seen=last_seen)


def pod_of(value: str) -> int:
    return int(value[: value.index("|")])


class Refusal(StrEnum):
    """Why a new user was not bound (the values name the limit, in metrics and logs)."""

    FULL = "max_bound_users"
    RATE = "new_per_s"


# BIND_MANY's per-uid codes for a refusal.
_REFUSALS = {-1: Refusal.FULL, -2: Refusal.RATE}

_MAX_PASSES = 8  # each pass declares at least one more pod; a service has few of them


class BindingStore:
    """All operations on the bindings of services. Every method touches one service's slot."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._bind = redis.register_script(scripts.BIND_MANY)
        self._move = redis.register_script(scripts.MOVE)
        self._unbind = redis.register_script(scripts.UNBIND)
        self._expire = redis.register_script(scripts.EXPIRE_IDLE)

    async def _run(
        self,
        script: AsyncScript,
        keys: ServiceKeys,
        pods: Iterable[int],
        args: Sequence[Any],
        own_keys: Sequence[str] = (),
    ) -> list[Any]:
        """Run a binding script until it has met no undeclared pod; -> each pass's result.

        See scripts.py: the script declares the reverse-index sets of ``pods`` and names the
        ones it also needed, which the next pass declares.
        """
        declared = sorted(set(pods))
        results: list[Any] = []
        for _ in range(_MAX_PASSES):
            result, undeclared = await script(
                keys=[
                    keys.bindings,
                    keys.last_seen,
                    *own_keys,
                    *(keys.pod_users(p) for p in declared),
                ],
                args=[",".join(map(str, declared)), *args],
            )
            results.append(result)
            if not undeclared:
                return results
            declared = sorted({*declared, *(int(p) for p in undeclared)})
        raise RuntimeError(f"bindings of {keys.bindings} kept naming new pods")

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
        """Bind each (uid, pod) unless the uid is bound already, in one atomic script.

        Returns, per item, the pod the uid ends up on and whether this call bound it: the
        first writer wins, so concurrent callers on any replica agree on one pod.
        """
        placed = await self.admit_many(keys, wanted, now, None)
        bound = [outcome for outcome in placed if not isinstance(outcome, Refusal)]
        assert len(bound) == len(placed)  # without limits nobody is refused
        return bound

    async def admit_many(
        self,
        keys: ServiceKeys,
        wanted: Sequence[tuple[str, int]],
        now: float,
        limits: NewUserLimits | None,
    ) -> list[tuple[int, bool] | Refusal]:
        """``bind_many`` within the service's ``limits``: a uid not bound yet is refused while
        the service holds ``max_bound_users`` or its token bucket (``new_per_s``, shared by
        every replica) is empty. Bound uids are answered whatever the limits."""
        if not wanted:
            return []
        pairs = [str(item) for uid, pod in wanted for item in (uid, pod)]
        bounds = (
            ("", "", "")
            if limits is None
            else (limits.max_bound_users, repr(limits.new_per_s), limits.burst)
        )
        [flat] = await self._run(
            self._bind,
            keys,
            (pod for _, pod in wanted),
            [repr(now), *bounds, *pairs],
            own_keys=[keys.new_user_tokens],
        )
        return [
            _REFUSALS[code] if code < 0 else (pod_of(value), bool(code))
            for code, value in zip(flat[::2], flat[1::2], strict=True)
        ]

    async def move(
        self, keys: ServiceKeys, uids: Sequence[str], to: int, now: float, *, only_from: int | None
    ) -> list[str]:
        """Rebind uids to pod ``to``; with ``only_from``, only those still bound to that pod.

        Without ``only_from`` an unbound uid is bound. Returns the uids that moved.
        """
        if not uids:
            return []
        pods = [to] if only_from is None else [to, only_from]
        expected = "" if only_from is None else str(only_from)
        passes = await self._run(self._move, keys, pods, [repr(now), expected, to, *uids])
        return [uid for moved in passes for uid in moved]

    async def unbind(self, keys: ServiceKeys, uid: str) -> Binding | None:
        passes: list[str] = await self._run(self._unbind, keys, [], [uid])
        value = next((v for v in passes if v), None)
        return None if value is None else parse_binding(uid, value)

    async def touch_many(self, keys: ServiceKeys, seen: Iterable[tuple[str, float]]) -> None:
        """Record last use of bound users (never creates an entry for an unbound uid)."""
        mapping = dict(seen)
        if mapping:
            await self._redis.zadd(keys.last_seen, mapping, xx=True)

    async def expire_idle(self, keys: ServiceKeys, cutoff: float, limit: int = 1000) -> int:
        """Forget users unused since ``cutoff``, at most ``limit`` per script run (the first
        run may only learn the pods involved); returns how many."""
        passes: list[int] = await self._run(self._expire, keys, [], [repr(cutoff), limit])
        return sum(passes)

    async def users_of(self, keys: ServiceKeys, pod: int, batch: int = 1000) -> AsyncIterator[str]:
        """Every uid bound to ``pod`` (the reverse index), scanned in batches."""
        async for uid in self._redis.sscan_iter(keys.pod_users(pod), count=batch):
            yield uid

    async def users_page(
        self, keys: ServiceKeys, pod: int, cursor: int, count: int
    ) -> tuple[list[str], int]:
        """One page of ``pod``'s users from the reverse index, resuming at ``cursor`` (0: from
        the start); -> (uids, the next page's cursor, 0 once every uid was returned).

        SSCAN pages: a page holds at least ``count`` uids unless the scan ended, and may hold
        more (a small set comes whole); a uid bound or moved during the scan may be missed.
        """
        found: list[str] = []
        while True:
            cursor, page = await self._redis.sscan(keys.pod_users(pod), cursor, count=count)
            found.extend(cast(list[str], page))
            if cursor == 0 or len(found) >= count:
                return found, cursor

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
